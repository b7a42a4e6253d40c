"""Plain-text formatting of CRM values for replies (money, dates, people, timeline lines)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from crm_store.models import Opportunity, TimelineEntry, User

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}


def money(amount: Decimal | int | float | None, currency: str, *, compact: bool = False) -> str:
    value = Decimal(amount or 0)
    symbol = SYMBOLS.get(currency.upper())
    if compact and abs(value) >= 1000:
        for size, unit in ((Decimal(1_000_000_000), "B"), (Decimal(1_000_000), "M"), (Decimal(1000), "k")):
            if abs(value) >= size:
                number = f"{(value / size):.1f}".rstrip("0").rstrip(".") + unit
                break
    else:
        number = f"{value:,.0f}"
    return f"{symbol}{number}" if symbol else f"{number} {currency.upper()}"


def day(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.strftime("%d %b %Y")


def person(user: User | None) -> str:
    return user.name if user is not None else "—"


def deal_line(opp: Opportunity) -> str:
    status = "" if opp.status == "open" else f" · {opp.status}"
    return (
        f"{opp.account.name} · {money(opp.amount, opp.currency, compact=True)} · {opp.stage}"
        f" · closes {day(opp.close_date)} · {person(opp.owner)}{status}"
    )


KIND_LABELS = {
    "note": "Note", "decision": "Decision", "action_item": "Action item", "stage_change": "Stage",
    "amount_change": "Amount", "close_date_change": "Close date", "room_created": "Room",
    "room_archived": "Room", "owner_change": "Owner", "won": "Won", "lost": "Lost", "reopened": "Reopened",
    "team_change": "Team",
}


def clip(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def timeline_line(entry: TimelineEntry, limit: int = 280) -> tuple[str, str]:
    kind = KIND_LABELS.get(entry.kind, entry.kind.replace("_", " ").capitalize())
    retracted = " (retracted)" if entry.retracted_at else ""
    title = f"{kind}{retracted} · {day(entry.occurred_at.date())} · {person(entry.author)}"
    return title, clip(entry.text, limit)


def join_names(names: list[str], limit: int = 5) -> str:
    """``A``, ``A and B``, ``A, B and C``, ``A, B, C, D, E and 3 others``."""
    if len(names) > limit:
        shown, rest = names[:limit], len(names) - limit
        return f"{', '.join(shown)} and {rest} other{'s' if rest != 1 else ''}"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"

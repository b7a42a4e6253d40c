"""A digest's facts (`crm_store.digest_content`) in words: the `Reply` every platform renders.

Sections with nothing to say are left out, and a digest where nothing moved is one line. Each
list shows the first few; the rest is one follow-up command away (``/crm digest more stale``),
so the message stays within every platform's size limits.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crm_store.digest_content import Captured, Change, Deal, DigestData, Listed, NewRoom, Stale
from handlers import texts
from handlers.format import KIND_LABELS, clip, day, money
from handlers.reply import Field, Item, Reply, Section

SECTION_NAMES = tuple(texts.DIGEST_SECTIONS)  # what `/crm digest more <name>` accepts
MAX_QUOTE = 200


def when(moment: datetime, zone: ZoneInfo) -> str:
    """``Mon 23 Nov 08:00`` in the reader's zone."""
    return moment.astimezone(zone).strftime("%a %d %b %H:%M")


def compose(data: DigestData, zone: ZoneInfo, *, stale_days: int) -> Reply:
    span = {"start": when(data.window.start, zone), "end": when(data.window.end, zone)}
    title = texts.DIGEST_TITLE.format(manager=data.manager)
    if data.nothing_moved:
        return Reply(title=title, text=texts.DIGEST_EMPTY.format(**span), ephemeral=False, shareable=False)
    reply = Reply(title=title, text=texts.DIGEST_SPAN.format(**span), ephemeral=False, shareable=False)
    if data.pipeline:
        reply.fields, pipeline = _pipeline(data)
        reply.sections.append(pipeline)
    for name in SECTION_NAMES:
        section = section_for(data, name, zone, stale_days=stale_days)
        if section is not None:
            reply.sections.append(section)
    return reply


def section_for(data: DigestData, name: str, zone: ZoneInfo, *, stale_days: int) -> Section | None:
    """One list of the digest by its `more` name, or None when it is empty."""
    lists: dict[str, Listed[Any]] = {"won": data.won, "lost": data.lost, "moved": data.moved, "amounts": data.amounts,
              "slipped": data.slipped, "decisions": data.captured, "stale": data.stale, "closing": data.closing,
              "rooms": data.rooms}
    listed = lists[name]
    if not listed:
        return None
    heading = texts.DIGEST_SECTIONS[name].format(n=listed.total, days=stale_days)
    items = [_item(name, entry, zone) for entry in listed.items]
    footer = texts.DIGEST_MORE.format(n=listed.more, name=name) if listed.more else ""
    return Section(heading, items=items, footer=footer, compact=True)


def _pipeline(data: DigestData) -> tuple[list[Field], Section]:
    fields = [Field(texts.DIGEST_TOTAL.format(currency=currency),
                    texts.DIGEST_TOTAL_VALUE.format(count=count, amount=money(amount, currency, compact=True),
                                                    weighted=money(weighted, currency, compact=True)))
              for currency, (count, amount, weighted) in data.totals.items()]
    items = []
    for line in data.pipeline:
        title = texts.DIGEST_STAGE_LINE.format(
            stage=line.stage, count=line.count, s="s" if line.count != 1 else "",
            amount=money(line.amount, line.currency, compact=True),
            weighted=money(line.weighted, line.currency, compact=True))
        items.append(Item(title, _since_last(data, line.stage, line.currency, line.count, line.amount)))
    gone = [key for key in (data.previous or {}) if key not in {(l.stage, l.currency) for l in data.pipeline}]
    for stage, currency in gone:  # a stage emptied since the last digest is news too
        items.append(Item(texts.DIGEST_STAGE_LINE.format(stage=stage, count=0, s="s", amount=money(0, currency),
                                                         weighted=money(0, currency)),
                          _since_last(data, stage, currency, 0, Decimal(0))))
    text = texts.DIGEST_FIRST if data.previous is None else ""
    return fields, Section(texts.DIGEST_PIPELINE, text=text, items=items, compact=True)


def _since_last(data: DigestData, stage: str, currency: str, count: int, amount: Decimal) -> str:
    if data.previous is None:
        return ""
    before = data.previous.get((stage, currency), (0, Decimal(0), Decimal(0)))
    if (count, amount) == before[:2]:
        return texts.DIGEST_UNCHANGED
    sign = "+" if amount >= before[1] else "−"
    return texts.DIGEST_SINCE_LAST.format(deals=f"{count - before[0]:+d}",
                                          amount=sign + money(abs(amount - before[1]), currency, compact=True))


def _deal_title(deal: Deal) -> str:
    return texts.DIGEST_DEAL.format(deal=deal.name, account=deal.account)


def _deal_detail(deal: Deal) -> str:
    return texts.DIGEST_DEAL_DETAIL.format(amount=money(deal.amount, deal.currency, compact=True), stage=deal.stage,
                                           close=day(deal.close_date), owner=deal.owner)


def _item(name: str, entry: Change | Captured | Stale | Deal | NewRoom, zone: ZoneInfo) -> Item:
    if isinstance(entry, Captured):
        kind = KIND_LABELS.get(entry.kind, entry.kind)
        detail = texts.DIGEST_CAPTURED_DETAIL.format(text=clip(entry.text, MAX_QUOTE), author=entry.author or "—",
                                                     when=when(entry.at, zone))
        if entry.permalink:
            detail += f"\n{entry.permalink}"
        return Item(texts.DIGEST_CAPTURED.format(kind=kind, deal=entry.deal.name), detail)
    if isinstance(entry, Stale):
        last = (texts.DIGEST_STALE.format(when=day(entry.last_activity.date())) if entry.last_activity
                else texts.DIGEST_STALE_NEVER)
        return Item(_deal_title(entry.deal), f"{_deal_detail(entry.deal)} · {last}")
    if isinstance(entry, NewRoom):
        platform = texts.ROOM_PLATFORM_NAMES.get(entry.platform, entry.platform)
        return Item(texts.DIGEST_ROOM.format(channel=entry.channel or "…", platform=platform, deal=entry.deal.name),
                    _deal_detail(entry.deal))
    if isinstance(entry, Deal) or name in ("won", "lost"):
        deal = entry if isinstance(entry, Deal) else entry.deal
        return Item(_deal_title(deal), _deal_detail(deal))
    return Item(_deal_title(entry.deal), f"{_change(name, entry)} · {_deal_detail(entry.deal)}")


def _change(name: str, change: Change) -> str:
    deal = change.deal
    if name == "amounts":
        old, new = Decimal(change.old or 0), Decimal(change.new or 0)
        percent = (new - old) * 100 / old if old else Decimal(100)
        return texts.DIGEST_AMOUNT.format(old=money(old, deal.currency), new=money(new, deal.currency), change=percent)
    if name == "slipped":
        times = texts.DIGEST_SLIP_TIMES.get(change.times, f"{change.times} times")
        return texts.DIGEST_SLIP.format(old=_date(change.old), new=_date(change.new), times=times)
    return texts.DIGEST_MOVE.format(old=change.old or "—", new=change.new or "—")


def _date(iso: str | None) -> str:
    if not iso:
        return "—"
    try:
        return day(datetime.fromisoformat(iso).date())
    except ValueError:
        return iso

"""What Dealbot says in a deal room: the pinned card, the topic, updates and the closing summary.

Implements `deal_rooms.rooms.RoomMessages`; the texts live in `handlers.texts`. The card is the
deal card of `/crm deal`, seen as the deal's owner sees it: everyone in the room is on the deal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from crm_store import Actor, Store
from crm_store.models import Opportunity, TimelineEntry, User, utcnow
from handlers import texts
from handlers.format import KIND_LABELS, clip, day, join_names, money
from handlers.invocation import Context, Invocation
from handlers.lookup import deal_card, resolve_deal
from handlers.registry import CommandError, commands
from handlers.reply import Item, Reply, Section


@commands.command("room", usage="room <deal>", summary="Open a deal room for a deal, even below the threshold.",
                  example="room acme renewal", args="required")
async def room(ctx: Context, args: str) -> Reply:
    if ctx.rooms is None:
        raise CommandError(texts.ROOM_NOT_HERE)
    opp = await resolve_deal(ctx, args, then="room #{id}")  # only a deal the user may see
    if opp.status != "open":
        raise CommandError(texts.ROOM_CLOSED_DEAL.format(deal=opp.name, status=opp.status))
    made = await ctx.rooms.react(opp.id, requested_by=ctx.actor.user_id)
    if made is not None and made.channel_id and made.channel_name:
        return Reply(text=texts.ROOM_EXISTS.format(deal=opp.name, channel=made.channel_name), reveals=(opp.id,))
    return Reply(text=texts.ROOM_ON_ITS_WAY.format(deal=opp.name), reveals=(opp.id,))


class RoomTexts:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def card(self, opportunity: Opportunity) -> Reply:
        owner = opportunity.owner
        as_owner = Actor(owner.id, owner.name, owner.email, owner.role, owner.time_zone)
        reply = await deal_card(Context(self.store, Invocation("", as_owner, platform="room")), opportunity)
        reply.ephemeral = False
        return reply

    def topic(self, opportunity: Opportunity) -> str:
        return texts.ROOM_TOPIC.format(amount=money(opportunity.amount, opportunity.currency, compact=True),
                                       stage=opportunity.stage, close=day(opportunity.close_date),
                                       owner=opportunity.owner.name)

    def updates(self, opportunity: Opportunity, entries: Sequence[TimelineEntry]) -> Reply:
        items = [Item(change_line(entry, opportunity.currency)) for entry in entries]
        return Reply(text=texts.ROOM_UPDATES.format(deal=opportunity.name), sections=[Section(items=items)],
                     ephemeral=False, reveals=(opportunity.id,))

    def absent(self, people: Sequence[User], platform: str) -> Reply:
        names = [f"{p.name} ({p.email})" for p in people]
        return Reply(text=texts.ROOM_ABSENT.format(platform=texts.ROOM_PLATFORM_NAMES.get(platform, platform),
                                                   people=join_names(names, limit=20)), ephemeral=False)

    def closing(self, opportunity: Opportunity, opened_at: datetime, decisions: int) -> Reply:
        days = max(0, (utcnow() - opened_at).days)
        return Reply(text=texts.ROOM_CLOSING.format(
            deal=opportunity.name, outcome=opportunity.status, amount=money(opportunity.amount, opportunity.currency),
            days=f"{days} day{'s' if days != 1 else ''}",
            decisions=f"{decisions} decision{'s' if decisions != 1 else ''}"), ephemeral=False,
            reveals=(opportunity.id,))


def change_line(entry: TimelineEntry, currency: str) -> str:
    """``Amount: $250,000 → $300,000``: a change as people say it (the stored text is plainer)."""
    data = entry.data or {}
    label = KIND_LABELS.get(entry.kind, "")
    if data.get("field") == "amount":
        return f"{label}: {_as(data.get('old'), lambda v: money(Decimal(v), currency))} → " \
               f"{_as(data.get('new'), lambda v: money(Decimal(v), currency))}"
    if data.get("field") == "close_date":
        return f"{label}: {_as(data.get('old'), lambda v: day(date.fromisoformat(v)))} → " \
               f"{_as(data.get('new'), lambda v: day(date.fromisoformat(v)))}"
    return clip(entry.text, 200)


def _as(value: object, show: Callable[[str], str]) -> str:
    if value is None:
        return "—"
    try:
        return show(str(value))
    except (ValueError, InvalidOperation):
        return str(value)

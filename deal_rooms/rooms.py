"""The room lifecycle: claim, create, staff, pin the card, keep current, close, archive, reopen.

Every decision is made from the database (`react` compares the deal with its room) and every
platform call is an outbox operation with an idempotency key, so events delivered twenty times,
retries, crashes and several replicas still give one channel per opportunity per platform:

- the room row is the claim (unique per opportunity and platform), written with its
  ``room.create`` operation in one transaction;
- a create whose outcome is unknown (the process died after calling the platform) is marked
  ``creating`` first, and its retry looks the channel up by name and adopts it;
- follow-ups are keyed by what they are about: one staffing per team composition, one update
  per room per grouping window, one close per closing, so repeats collapse into one row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store import Store
from crm_store.engine import insert_unless_present
from crm_store.events import OpportunityChanged
from crm_store.models import (
    DealRoom,
    DealStatus,
    DealTeamMember,
    Opportunity,
    TimelineEntry,
    User,
    utcnow,
)
from crm_store.outbox import Claimed, GiveUp, Queued, Retry
from deal_rooms.naming import DEFAULT_TEMPLATE, candidates, room_name
from deal_rooms.policy import RoomPolicy
from deal_rooms.port import ChannelGone, ChatPort, NameTaken, RateLimited, Refused

log = logging.getLogger("dealbot.deal_rooms")

UPDATE_KINDS = ("stage_change", "amount_change", "close_date_change", "owner_change", "won", "lost",
                "reopened", "team_change")
# The rate-limited port call each operation makes (at most once), so the outbox paces it.
PACED_CALLS = {"room.create": "create_channel", "room.card": "set_topic", "room.pin": "pin",
               "room.refresh": "set_topic", "room.archive": "archive", "room.reopen": "unarchive"}
LIVE = ("active",)
CHUNK = 500
WAITING = ("claimed", "creating")


@dataclass(frozen=True)
class RoomSettings:
    policy: RoomPolicy = field(default_factory=RoomPolicy)
    template: str = DEFAULT_TEMPLATE
    private: bool = True
    invite_manager: bool = False
    archive_delay: timedelta = timedelta(hours=24)
    group_window: timedelta = timedelta(seconds=5)  # updates arriving this close are posted together


class RoomMessages(Protocol):
    """What the bot says in a room; composed outside this package, where the texts live."""

    async def card(self, opportunity: Opportunity) -> Any: ...
    def topic(self, opportunity: Opportunity) -> str: ...
    def updates(self, opportunity: Opportunity, entries: Sequence[TimelineEntry]) -> Any: ...
    def absent(self, people: Sequence[User], platform: str) -> Any: ...
    def closing(self, opportunity: Opportunity, opened_at: datetime, decisions: int) -> Any: ...


@dataclass
class RoomPlan:
    """Deals whose rooms are behind, with their room row when there is one."""

    create: list[tuple[Opportunity, DealRoom | None]] = field(default_factory=list)
    close: list[tuple[Opportunity, DealRoom]] = field(default_factory=list)
    reopen: list[tuple[Opportunity, DealRoom]] = field(default_factory=list)
    live: list[tuple[Opportunity, DealRoom]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Op:
    operation: str
    key: str
    payload: dict[str, Any]
    due: datetime | None = None


class DealRooms:
    """Deal rooms on one platform. Handlers are registered on the store's outbox."""

    def __init__(self, store: Store, port: ChatPort, messages: RoomMessages, settings: RoomSettings) -> None:
        self.store, self.port, self.messages, self.settings = store, port, messages, settings
        self.platform = port.platform
        for operation, handler in (("room.create", self._create), ("room.staff", self._staff),
                                   ("room.card", self._card), ("room.pin", self._pin),
                                   ("room.refresh", self._refresh),
                                   ("room.close", self._close), ("room.archive", self._archive),
                                   ("room.reopen", self._reopen)):
            store.outbox.register(self.platform, operation, handler)
            call = PACED_CALLS.get(operation)
            if call is not None and call in port.limits:
                store.outbox.pace(self.platform, operation, call, port.limits[call])
        store.changes.subscribe(self.on_change)

    # -- deciding -----------------------------------------------------------------------------

    async def on_change(self, event: OpportunityChanged) -> None:
        await self.react(event.opportunity_id)

    async def react(self, opportunity_id: int, *, requested_by: int | None = None) -> DealRoom | None:
        """Bring the deal's room in line with the deal: claim it, or queue what it is missing.

        `requested_by` (``/crm room``) makes a room even for a deal below the policy."""
        room, _ = await self._react(opportunity_id, requested_by)
        return room

    async def _react(self, opportunity_id: int, requested_by: int | None = None) -> tuple[DealRoom | None, list[Op]]:
        async with self.store.transaction(renames=False) as s:
            opp = await _opportunity(s, opportunity_id)
            if opp is None:
                return None, []
            room = await self._room(s, opportunity_id)
            if room is None:
                if requested_by is None and not self.settings.policy.qualifies(opp):
                    return None, []
                room = await self._claim(s, opp, requested_by)
                if room is None:
                    return await self._room(s, opportunity_id), []  # another delivery claimed it first
            ops = self._missing(opp, room)
            await self._enqueue(s, ops)
        self._wake(ops)
        return room, ops

    def _wake(self, ops: Sequence[Op]) -> None:
        for op in ops:
            self.store.outbox.wake(op.due)

    async def plan(self) -> RoomPlan:
        """What reconciling would do: rooms to create (or finish creating), to close, to reopen,
        and the live rooms whose members it would check."""
        policy = self.settings.policy
        lowest = min([policy.min_amount, *policy.min_amounts.values()])
        has_room = select(DealRoom.opportunity_id).where(DealRoom.platform == self.platform)
        roomless = select(Opportunity.id).where(Opportunity.status == DealStatus.open.value,
                                                Opportunity.amount >= lowest, Opportunity.id.not_in(has_room))
        plan = RoomPlan()
        async with self.store.session() as s:
            candidates = await _opportunities(s, list((await s.execute(roomless)).scalars()))
            plan.create += [(opp, None) for opp in candidates.values() if policy.qualifies(opp)]
            rooms = (await s.execute(select(DealRoom).where(
                DealRoom.platform == self.platform, DealRoom.status.in_((*WAITING, *LIVE, "closed", "archived")))
                .order_by(DealRoom.id))).scalars().all()
            deals = await _opportunities(s, [room.opportunity_id for room in rooms])
        for room in rooms:
            opp = deals[room.opportunity_id]
            is_open = opp.status == DealStatus.open.value
            if room.status in WAITING:
                plan.create.append((opp, room))
            elif room.status in LIVE:
                (plan.live if is_open else plan.close).append((opp, room))
            elif is_open:
                plan.reopen.append((opp, room))
        return plan

    async def sweep(self) -> int:
        """Reconcile every deal whose room is behind (the periodic job). Returns how many."""
        plan = await self.plan()
        behind = [opp.id for opp, _ in (*plan.create, *plan.close, *plan.reopen)]
        for opportunity_id in behind:
            await self._react(opportunity_id)
        return len(behind)

    async def sync(self) -> list[str]:
        """Reconcile now, as `dealbot rooms sync` does: what the sweep does, plus a members check
        of every live room, and operations that had failed for good are given another chance
        (the cause may be fixed: a scope granted, a name freed). Returns the outbox keys to watch."""
        plan = await self.plan()
        ops: list[Op] = []
        for opp, _ in (*plan.create, *plan.close, *plan.reopen):
            ops += (await self._react(opp.id))[1]
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        checks = [Op("room.staff", f"room.staff:{room.id}:sync:{stamp}", _about(room)) for _, room in plan.live]
        keys = [f"{self.platform}:{op.key}" for op in (*ops, *checks)]
        async with self.store.transaction(renames=False) as s:
            await self._enqueue(s, checks)
            await self.store.outbox.revive(s, keys)
        self.store.outbox.wake()
        return keys

    def _missing(self, opp: Opportunity, room: DealRoom) -> list[Op]:
        ref = _about(room)
        if room.status in WAITING:
            return [Op("room.create", f"room.create:{opp.id}", ref)]
        closed_key = (opp.closed_at or opp.updated_at).isoformat()
        if room.status in LIVE:
            if opp.status != DealStatus.open.value:
                return [Op("room.close", f"room.close:{room.id}:{closed_key}", ref)]
            return [self._staffing(opp, room), self._refreshing(room)]
        if room.status in ("closed", "archived") and opp.status == DealStatus.open.value:
            return [Op("room.reopen", f"room.reopen:{room.id}:{room.archived_at or closed_key}", ref)]
        return []

    def _people(self, opp: Opportunity) -> list[User]:
        people = {opp.owner.id: opp.owner, **{m.user.id: m.user for m in opp.team}}
        if self.settings.invite_manager and opp.owner.manager is not None:
            people[opp.owner.manager.id] = opp.owner.manager
        return [p for p in people.values() if p.erased_at is None]

    def _staffing(self, opp: Opportunity, room: DealRoom) -> Op:
        ids = sorted(p.id for p in self._people(opp))
        digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:12]
        return Op("room.staff", f"room.staff:{room.id}:{digest}", _about(room))

    def _refreshing(self, room: DealRoom) -> Op:
        window = self.settings.group_window.total_seconds()
        slot = int(utcnow().timestamp() // window) + 1
        due = datetime.fromtimestamp(slot * window, timezone.utc)
        return Op("room.refresh", f"room.refresh:{room.id}:{slot}", _about(room), due)

    async def _claim(self, s: AsyncSession, opp: Opportunity, requested_by: int | None) -> DealRoom | None:
        claim = {"opportunity_id": opp.id, "platform": self.platform, "status": "claimed",
                 "requested_by_id": requested_by, "renamed_by_hand": False, "listed_absent": []}
        inserted = (await s.execute(insert_unless_present(s, DealRoom, [claim]).returning(DealRoom.id))
                    ).scalar_one_or_none()
        if inserted is None:
            return None
        log.info("deal room claimed", extra={"opportunity_id": opp.id, "platform": self.platform})
        return await s.get(DealRoom, inserted)

    async def _enqueue(self, s: AsyncSession, ops: Sequence[Op]) -> None:
        await self.store.outbox.enqueue(s, [Queued(self.platform, op.operation, f"{self.platform}:{op.key}",
                                                   op.payload, op.due) for op in ops])

    async def _room(self, s: AsyncSession, opportunity_id: int) -> DealRoom | None:
        return (await s.execute(select(DealRoom).where(
            DealRoom.opportunity_id == opportunity_id, DealRoom.platform == self.platform))).scalar_one_or_none()

    # -- doing (outbox handlers) --------------------------------------------------------------

    async def _load(self, item: Claimed) -> tuple[DealRoom, Opportunity]:
        async with self.store.session() as s:
            room = await s.get(DealRoom, item.payload["room_id"])
            if room is None:
                raise GiveUp("the room row is gone")
            opp = await _opportunity(s, room.opportunity_id)
            assert opp is not None  # the room row cascades with its opportunity
            return room, opp

    async def _save(self, room_id: int, ops: Sequence[Op] = (), **values: Any) -> None:
        async with self.store.transaction(renames=False) as s:
            if values:
                await s.execute(update(DealRoom).where(DealRoom.id == room_id).values(**values))
            await self._enqueue(s, ops)
        self._wake(ops)

    async def _create(self, item: Claimed) -> dict[str, Any] | None:
        room, opp = await self._load(item)
        if room.status not in WAITING:
            return {"channel_id": room.channel_id}  # done before: a repeated delivery
        if opp.status != DealStatus.open.value:
            await self._save(room.id, status="cancelled")
            return {"cancelled": True}
        with _platform_errors():
            channel = await self._adopt(room) or await self._make(room, opp)
        await self._save(room.id, [self._staffing(opp, room), Op("room.card", f"room.card:{room.id}", _about(room))],
                         channel_id=channel.id, channel_name=channel.name, status="active")
        log.info("deal room created", extra={"opportunity_id": opp.id, "platform": self.platform})
        return {"channel_id": channel.id, "name": channel.name}

    async def _adopt(self, room: DealRoom) -> Any:
        """After a create whose answer was lost, the channel exists under the name we asked for."""
        if room.status != "creating" or not room.channel_name:
            return None
        found = await self.port.find_channel(room.channel_name)
        if found is None or not found.created_by_us:
            return None
        async with self.store.session() as s:
            taken = (await s.execute(select(DealRoom.id).where(
                DealRoom.platform == self.platform, DealRoom.channel_id == found.id))).scalar_one_or_none()
        if taken is not None:
            return None  # that channel is another deal's room
        log.info("adopting a channel created before a crash", extra={"room_id": room.id})
        return found

    async def _make(self, room: DealRoom, opp: Opportunity) -> Any:
        base = room_name(self.settings.template, opp.account.name, opp.name, self.port.names)
        for name in candidates(base, opp.id, self.port.names):
            await self._save(room.id, status="creating", channel_name=name)  # so a crash from here is adopted
            try:
                return await self.port.create_channel(name, private=self.settings.private, owner_email=opp.owner.email)
            except NameTaken:
                continue
            except (RateLimited, Refused):
                await self._save(room.id, status="claimed")  # surely not made: no lookup next time
                raise
        raise GiveUp(f"no free channel name for {base!r}")

    async def _staff(self, item: Claimed) -> dict[str, Any] | None:
        room, opp = await self._load(item)
        if room.status not in LIVE or room.channel_id is None:
            return {"skipped": room.status}
        people = self._people(opp)
        with _platform_errors():
            found = {p.id: await self.port.user_for_email(p.email) for p in people}
            present = await self.port.members(room.channel_id)
            to_invite = sorted({chat_id for chat_id in found.values() if chat_id and chat_id not in present})
            if to_invite:
                await self.port.invite(room.channel_id, to_invite)
            absent = [p for p in people if not found[p.id] and p.id not in room.listed_absent]
            if absent:
                await self.port.post(room.channel_id, self.messages.absent(absent, self.platform))
        if absent:
            await self._save(room.id, listed_absent=sorted({*room.listed_absent, *(p.id for p in absent)}))
        return {"invited": to_invite, "absent": [p.id for p in absent]}

    async def _card(self, item: Claimed) -> dict[str, Any] | None:
        """Topic and card; a new card's pin is its own operation, so a failed pin is retried
        alone (and each operation makes at most one rate-limited call)."""
        room, opp = await self._load(item)
        if room.status not in LIVE or room.channel_id is None:
            return {"skipped": room.status}
        with _platform_errors():
            await self.port.set_topic(room.channel_id, self.messages.topic(opp))
            card = await self.messages.card(opp)
            if room.pinned_message_ref:
                await self.port.update(room.channel_id, room.pinned_message_ref, card)
                return {"updated": room.pinned_message_ref}
            ref = await self.port.post(room.channel_id, card)
        await self._save(room.id, [Op("room.pin", f"room.pin:{room.id}:{ref}", {**_about(room), "ref": ref})],
                         pinned_message_ref=ref)
        return {"posted": ref}

    async def _pin(self, item: Claimed) -> dict[str, Any] | None:
        async with self.store.session() as s:
            room = await s.get(DealRoom, item.payload["room_id"])
        if room is None:
            raise GiveUp("the room row is gone")
        if room.status not in LIVE or room.channel_id is None:
            return {"skipped": room.status}
        with _platform_errors():
            await self.port.pin(room.channel_id, item.payload["ref"])
        return {"pinned": item.payload["ref"]}

    async def _refresh(self, item: Claimed) -> dict[str, Any] | None:
        """Post what changed since the last update, follow a renamed deal, refresh topic and card."""
        room, opp = await self._load(item)
        if room.status not in LIVE or room.channel_id is None:
            return {"skipped": room.status}
        with _platform_errors():
            channel = await self.port.channel(room.channel_id)
            if channel.archived:  # archived by hand: respected, never fought
                await self._save(room.id, status="left", archived_at=utcnow())
                return {"left": True}
            values: dict[str, Any] = {}
            if channel.name != room.channel_name and not room.renamed_by_hand:
                values["renamed_by_hand"] = room.renamed_by_hand = True  # people chose this name: keep it
            if not room.renamed_by_hand:
                renamed = await self._rename(room, opp)
                if renamed:
                    values["channel_name"] = renamed
            entries = await self._news(room)
            if entries:
                await self.port.post(room.channel_id, self.messages.updates(opp, entries))
                values["announced_through"] = entries[-1].id
            await self.port.set_topic(room.channel_id, self.messages.topic(opp))
            if room.pinned_message_ref:
                await self.port.update(room.channel_id, room.pinned_message_ref, await self.messages.card(opp))
        if values:
            await self._save(room.id, **values)
        return {"posted": len(entries), "renamed": values.get("channel_name")}

    async def _rename(self, room: DealRoom, opp: Opportunity) -> str | None:
        base = room_name(self.settings.template, opp.account.name, opp.name, self.port.names)
        if room.channel_name is None or room.channel_name in set(_first(candidates(base, opp.id, self.port.names), 5)):
            return None  # still named after the deal (a suffix included)
        assert room.channel_id is not None
        for name in candidates(base, opp.id, self.port.names):
            try:
                await self.port.rename(room.channel_id, name)
                return name
            except NameTaken:
                continue
        return None

    async def _news(self, room: DealRoom) -> list[TimelineEntry]:
        """Timeline changes the room has not heard of (since the room was made, at first)."""
        query = select(TimelineEntry).where(TimelineEntry.opportunity_id == room.opportunity_id,
                                            TimelineEntry.kind.in_(UPDATE_KINDS))
        if room.announced_through is not None:
            query = query.where(TimelineEntry.id > room.announced_through)
        else:
            query = query.where(TimelineEntry.occurred_at >= room.created_at)
        async with self.store.session() as s:
            return list((await s.execute(query.order_by(TimelineEntry.id).options(
                selectinload(TimelineEntry.author)))).scalars())

    async def _close(self, item: Claimed) -> dict[str, Any] | None:
        """The deal was won or lost: a closing summary now, the archive after the delay."""
        room, opp = await self._load(item)
        if room.status not in LIVE or room.channel_id is None:
            return {"skipped": room.status}
        if opp.status == DealStatus.open.value:
            return {"skipped": "reopened"}
        async with self.store.session() as s:
            decisions = (await s.execute(select(func.count()).select_from(TimelineEntry).where(
                TimelineEntry.opportunity_id == opp.id, TimelineEntry.kind == "decision",
                TimelineEntry.retracted_at.is_(None)))).scalar_one()
        with _platform_errors():
            channel = await self.port.channel(room.channel_id)
            if channel.archived:
                await self._save(room.id, status="left", archived_at=utcnow())
                return {"left": True}
            await self.port.post(room.channel_id, self.messages.closing(opp, room.created_at, int(decisions)))
            if room.pinned_message_ref:
                await self.port.update(room.channel_id, room.pinned_message_ref, await self.messages.card(opp))
        archive = Op("room.archive", f"room.archive:{item.idempotency_key}", _about(room),
                     utcnow() + self.settings.archive_delay)
        await self._save(room.id, [archive], status="closed")
        return {"decisions": int(decisions)}

    async def _archive(self, item: Claimed) -> dict[str, Any] | None:
        room, opp = await self._load(item)
        if room.status != "closed" or room.channel_id is None or opp.status == DealStatus.open.value:
            return {"skipped": room.status}
        with _platform_errors():
            channel = await self.port.channel(room.channel_id)
            if not channel.archived:
                await self.port.archive(room.channel_id)
        await self._save(room.id, status="archived" if not channel.archived else "left", archived_at=utcnow())
        return {"archived": True}

    async def _reopen(self, item: Claimed) -> dict[str, Any] | None:
        room, opp = await self._load(item)
        if room.status not in ("closed", "archived") or room.channel_id is None:
            return {"skipped": room.status}
        if opp.status != DealStatus.open.value:
            return {"skipped": "closed again"}
        with _platform_errors():
            if room.status == "archived":
                await self.port.unarchive(room.channel_id)
        ops = [self._staffing(opp, room), self._refreshing(room)]
        await self._save(room.id, ops, status="active", archived_at=None)
        return {"reopened": True}


def _about(room: DealRoom) -> dict[str, Any]:
    """An operation's payload: its room, and the room as its outbox lane (one room's operations
    run in order; different rooms' side by side)."""
    return {"room_id": room.id, "lane": f"room:{room.id}"}


def _first(names: Any, n: int) -> list[str]:
    return [name for _, name in zip(range(n), names)]


@contextmanager
def _platform_errors() -> Iterator[None]:
    """Platform failures as outbox outcomes: wait when told to, retry the transient, fail the rest."""
    try:
        yield
    except RateLimited as error:
        raise Retry(str(error), after_s=error.after_s) from error
    except (Refused, ChannelGone) as error:
        raise GiveUp(str(error)) from error


def _with_people(query: Any) -> Any:
    return query.options(selectinload(Opportunity.account), selectinload(Opportunity.owner).selectinload(User.manager),
                         selectinload(Opportunity.team).selectinload(DealTeamMember.user))


async def _opportunity(s: AsyncSession, opportunity_id: int) -> Opportunity | None:
    return (await s.execute(_with_people(select(Opportunity).where(Opportunity.id == opportunity_id)))
            ).scalar_one_or_none()


async def _opportunities(s: AsyncSession, ids: list[int]) -> dict[int, Opportunity]:
    """Many deals with their people, a few queries per chunk (the sweep looks at every room)."""
    found: dict[int, Opportunity] = {}
    for at in range(0, len(ids), CHUNK):
        query = _with_people(select(Opportunity).where(Opportunity.id.in_(ids[at:at + CHUNK])).order_by(Opportunity.id))
        found.update((opp.id, opp) for opp in (await s.execute(query)).scalars())
    return found

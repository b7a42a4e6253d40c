"""Reads and writes about deals: cards, pipeline, timeline and notes, visibility included.

Each function takes the acting user; hidden deals are filtered in SQL, so they never show up in
lists, totals or error messages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from crm_store.actors import Actor
from crm_store.models import (
    Account,
    AuditLog,
    Contact,
    DealRoom,
    Opportunity,
    TimelineEntry,
    User,
    utcnow,
)
from crm_store.stages import probability, stage_order
from crm_store.store import Store
from crm_store.events import timeline_changed
from crm_store.visibility import directory_visible, opportunity_visible, reporting_tree

MAX_NOTE_CHARS = 3000


@dataclass
class StageLine:
    stage: str
    currency: str
    count: int = 0
    amount: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)


@dataclass
class Pipeline:
    lines: list[StageLine]
    closing_this_month: list[Opportunity]
    closing_count: int
    totals: dict[str, tuple[int, Decimal, Decimal]] = field(default_factory=dict)


@dataclass
class AccountCard:
    account: Account
    open_deals: list[Opportunity]
    contacts: list[Contact]
    contact_count: int


async def recent_entries(store: Store, actor: Actor, opportunity_id: int, limit: int = 10,
                         before_id: int | None = None, *, decisions: bool = False) -> list[TimelineEntry]:
    """Newest timeline entries of a visible deal (empty when the deal is hidden); with
    `decisions`, only its standing decisions (not retracted)."""
    query = (
        select(TimelineEntry)
        .join(Opportunity, Opportunity.id == TimelineEntry.opportunity_id)
        .where(TimelineEntry.opportunity_id == opportunity_id, opportunity_visible(actor))
        .options(selectinload(TimelineEntry.author))
        .order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc())
        .limit(limit)
    )
    if decisions:
        query = query.where(TimelineEntry.kind == "decision", TimelineEntry.retracted_at.is_(None))
    if before_id is not None:
        # Keyset paging in the same order as the listing: (occurred_at, id) descending.
        cursor = select(TimelineEntry.occurred_at).where(TimelineEntry.id == before_id).scalar_subquery()
        query = query.where((TimelineEntry.occurred_at < cursor)
                            | ((TimelineEntry.occurred_at == cursor) & (TimelineEntry.id < before_id)))
    async with store.session() as s:
        return list((await s.execute(query)).scalars())


async def key_contacts(store: Store, actor: Actor, account_id: int, limit: int = 3) -> tuple[list[Contact], int]:
    base = select(Contact).where(
        Contact.account_id == account_id, Contact.erased_at.is_(None), directory_visible(actor)
    )
    async with store.session() as s:
        rows = list((await s.execute(base.order_by(Contact.title.is_(None), Contact.name).limit(limit))).scalars())
        count = (await s.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    return rows, count


async def account_card(store: Store, actor: Actor, account_id: int) -> AccountCard | None:
    async with store.session() as s:
        account = (await s.execute(
            select(Account).where(Account.id == account_id, directory_visible(actor))
            .options(selectinload(Account.owner))
        )).scalar_one_or_none()
        if account is None:
            return None
        deals = list((await s.execute(
            select(Opportunity)
            .where(Opportunity.account_id == account_id, Opportunity.status == "open", opportunity_visible(actor))
            .options(selectinload(Opportunity.owner), selectinload(Opportunity.account))
            .order_by(Opportunity.amount.desc())
            .limit(10)
        )).scalars())
    contacts, count = await key_contacts(store, actor, account_id, limit=5)
    return AccountCard(account, deals, contacts, count)


PipelineScope = Literal["mine", "team", "user"]


async def pipeline(store: Store, actor: Actor, owners_of: int, scope: PipelineScope, today: date) -> Pipeline:
    """Open pipeline of `owners_of` (alone, or with everyone below them for ``team``)."""
    owners = reporting_tree(owners_of, "owners_tree") if scope == "team" else select(User.id).where(User.id == owners_of)
    visible_open = (Opportunity.status == "open") & Opportunity.owner_id.in_(owners) & opportunity_visible(actor)
    month_start = today.replace(day=1)
    next_month = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    async with store.session() as s:
        grouped = (await s.execute(
            select(Opportunity.stage, Opportunity.currency, Opportunity.probability,
                   func.count(), func.sum(Opportunity.amount))
            .where(visible_open)
            .group_by(Opportunity.stage, Opportunity.currency, Opportunity.probability)
        )).all()
        closing_filter = visible_open & (Opportunity.close_date >= month_start) & (Opportunity.close_date < next_month)
        closing = list((await s.execute(
            select(Opportunity).where(closing_filter)
            .options(selectinload(Opportunity.account), selectinload(Opportunity.owner))
            .order_by(Opportunity.amount.desc()).limit(10)
        )).scalars())
        closing_count = (await s.execute(select(func.count()).where(closing_filter))).scalar_one()
    lines, totals = stage_lines(grouped)
    return Pipeline(lines, closing, closing_count, totals)


def stage_lines(grouped: Iterable[Any]) -> tuple[list[StageLine], dict[str, tuple[int, Decimal, Decimal]]]:
    """Rows of (stage, currency, probability, count, amount) as stage lines in stage order, and
    (count, amount, weighted) per currency."""
    lines: dict[tuple[str, str], StageLine] = {}
    totals: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for stage, currency, prob, count, amount in grouped:
        amount = Decimal(amount or 0)
        weighted = amount * probability(stage, prob) / 100
        line = lines.setdefault((stage, currency), StageLine(stage, currency))
        line.count += count
        line.amount += amount
        line.weighted += weighted
        t = totals[currency]
        t[0] += count
        t[1] += amount
        t[2] += weighted
    ordered = sorted(lines.values(), key=lambda l: (stage_order(l.stage), l.currency))
    return ordered, {c: (t[0], t[1], t[2]) for c, t in sorted(totals.items())}


async def has_reports(store: Store, user_id: int) -> bool:
    async with store.session() as s:
        return (await s.execute(select(func.count()).where(User.manager_id == user_id))).scalar_one() > 0


async def room_deal(store: Store, actor: Actor, platform: str, channel_id: str) -> Opportunity | None:
    """The deal whose room is `channel_id`, if any and if the actor may see it."""
    async with store.session() as s:
        opp_id = (await s.execute(
            select(DealRoom.opportunity_id).where(DealRoom.platform == platform, DealRoom.channel_id == channel_id)
        )).scalar_one_or_none()
    return await store.opportunity(actor, opp_id) if opp_id is not None else None


EntryKind = Literal["note", "decision", "action_item"]


@dataclass(frozen=True, slots=True)
class Source:
    """The chat message an entry comes from: the platform's reference to it and a link back."""

    platform: str
    ref: str
    permalink: str | None = None


@dataclass(frozen=True, slots=True)
class Logged:
    entry: TimelineEntry
    created: bool  # False: this source message was logged before, `entry` is that entry


async def add_entry(store: Store, actor: Actor, opportunity_id: int, kind: EntryKind, text: str, via: str, *,
                    occurred_at: datetime | None = None, source: Source | None = None) -> Logged:
    """Write a note, decision or action item on a visible deal's timeline, audit-logged in the
    same transaction. One entry per source message, however often it is logged (the unique
    `(source_platform, source_ref)` decides, also between replicas)."""
    if actor.user_id is None:
        raise PermissionError("unmapped users cannot write")
    async with store.transaction(renames=False) as s:
        visible = (await s.execute(
            select(Opportunity.id).where(Opportunity.id == opportunity_id, opportunity_visible(actor))
        )).scalar_one_or_none()
        if visible is None:
            raise LookupError("deal not visible")
        if source is not None and (earlier := await entry_from(s, source.platform, source.ref)) is not None:
            return Logged(earlier, created=False)
        entry = TimelineEntry(
            opportunity_id=opportunity_id, kind=kind, text=text[:MAX_NOTE_CHARS], author_id=actor.user_id,
            source_platform=source.platform if source else None, source_ref=source.ref if source else None,
            permalink=source.permalink if source else None, occurred_at=occurred_at or utcnow(), data={"via": via},
        )
        try:
            async with s.begin_nested():
                s.add(entry)
        except IntegrityError:  # logged a moment ago by another request or replica
            assert source is not None
            earlier = await entry_from(s, source.platform, source.ref)
            assert earlier is not None
            return Logged(earlier, created=False)
        s.add(AuditLog(
            actor_user_id=actor.user_id, actor=actor.email or actor.name, via=via, action=f"{kind}.create",
            entity_type="opportunity", entity_id=str(opportunity_id), details={"timeline_entry_id": entry.id},
        ))
        await store.outbox.enqueue(s, [timeline_changed(opportunity_id, kind)])
    store.outbox.wake()
    return Logged(entry, created=True)


async def entry_from(s: AsyncSession, platform: str, ref: str) -> TimelineEntry | None:
    """The entry a source message produced, if any (at most one: the pair is unique)."""
    return (await s.execute(select(TimelineEntry).where(
        TimelineEntry.source_platform == platform, TimelineEntry.source_ref == ref))).scalar_one_or_none()

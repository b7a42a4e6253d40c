"""What moved in a manager's team pipeline during a digest's window: the facts, not the words.

The team is the manager's whole reporting tree: deals owned by the manager or anyone below them,
which the visibility rules let the manager see (everyone above an owner sees the deal). Each
section is one query driven by the tree's deals, through the indexes on owner, opportunity and
time, so a first-line manager's digest touches their hundred deals, not the whole table. Lists
are cut at `limit` with the full count kept, for "… and N more".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm_store.deals import StageLine, stage_lines
from crm_store.models import Account, DealRoom, Opportunity, OpportunityHistory, TimelineEntry, User
from crm_store.store import Store
from crm_store.visibility import reporting_tree

T = TypeVar("T")
CLOSING_DAYS = 14
CAPTURED_KINDS = ("decision", "action_item")


@dataclass(frozen=True, slots=True)
class Window:
    """What a digest covers: changes after `start`, up to and including `end`."""

    start: datetime
    end: datetime


@dataclass(slots=True)
class Listed(Generic[T]):
    items: list[T] = field(default_factory=list)
    total: int = 0

    @property
    def more(self) -> int:
        return self.total - len(self.items)

    def __bool__(self) -> bool:
        return self.total > 0


@dataclass(frozen=True, slots=True)
class Deal:
    id: int
    name: str
    account: str
    owner: str
    amount: Decimal
    currency: str
    stage: str
    close_date: date | None


@dataclass(frozen=True, slots=True)
class Change:
    """A deal's net change of one field over the window (first old value, last new value)."""

    deal: Deal
    old: str | None
    new: str | None
    times: int = 1  # close dates: how often the deal has slipped, ever


@dataclass(frozen=True, slots=True)
class Captured:
    deal: Deal
    kind: str
    text: str
    author: str | None
    permalink: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Stale:
    deal: Deal
    last_activity: datetime | None


@dataclass(frozen=True, slots=True)
class NewRoom:
    deal: Deal
    platform: str
    channel: str | None


@dataclass(slots=True)
class DigestData:
    manager: str
    window: Window
    pipeline: list[StageLine]
    totals: dict[str, tuple[int, Decimal, Decimal]]
    previous: dict[tuple[str, str], tuple[int, Decimal, Decimal]] | None  # at the last digest
    moved: Listed[Change] = field(default_factory=Listed)
    won: Listed[Change] = field(default_factory=Listed)
    lost: Listed[Change] = field(default_factory=Listed)
    amounts: Listed[Change] = field(default_factory=Listed)
    slipped: Listed[Change] = field(default_factory=Listed)
    captured: Listed[Captured] = field(default_factory=Listed)
    stale: Listed[Stale] = field(default_factory=Listed)
    closing: Listed[Deal] = field(default_factory=Listed)
    rooms: Listed[NewRoom] = field(default_factory=Listed)

    @property
    def pipeline_changed(self) -> bool:
        return self.previous is None or self.previous != _lines_key(self.pipeline)

    @property
    def nothing_moved(self) -> bool:
        """No section has anything to say (an unchanged pipeline is not news)."""
        lists = (self.moved, self.won, self.lost, self.amounts, self.slipped, self.captured, self.stale,
                 self.closing, self.rooms)
        return not any(lists) and not (self.pipeline and self.pipeline_changed)

    def snapshot(self) -> dict[str, Any]:
        """The pipeline as stored with the run, for the next digest's comparison."""
        return {"lines": [[l.stage, l.currency, l.count, str(l.amount), str(l.weighted)] for l in self.pipeline]}


def previous_lines(snapshot: dict[str, Any] | None) -> dict[tuple[str, str], tuple[int, Decimal, Decimal]] | None:
    if not snapshot:
        return None
    return {(stage, currency): (count, Decimal(amount), Decimal(weighted))
            for stage, currency, count, amount, weighted in snapshot.get("lines", [])}


def _lines_key(lines: list[StageLine]) -> dict[tuple[str, str], tuple[int, Decimal, Decimal]]:
    return {(l.stage, l.currency): (l.count, l.amount, l.weighted) for l in lines}


@dataclass(frozen=True, slots=True)
class Options:
    stale_days: int = 14
    amount_change_percent: Decimal = Decimal(10)
    limit: int = 10  # items per list


async def team_digest(store: Store, manager_id: int, window: Window, *, previous: dict[str, Any] | None = None,
                      options: Options = Options()) -> DigestData:
    """Everything the digest of `manager_id` says about `window`; `previous` is the last run's snapshot."""
    query = _Queries(manager_id, window, options)
    async with store.session() as s:
        manager = (await s.execute(select(User.name).where(User.id == manager_id))).scalar_one()
        lines, totals = stage_lines((await s.execute(query.pipeline())).all())
        data = DigestData(manager, window, lines, totals, previous_lines(previous))
        await query.history(s, data)
        data.captured = await query.captured(s)
        data.stale = await query.stale(s)
        data.closing = await query.closing(s)
        data.rooms = await query.rooms(s)
    return data


class _Queries:
    def __init__(self, manager_id: int, window: Window, options: Options) -> None:
        self.window, self.options = window, options
        self.tree = reporting_tree(manager_id, "digest_tree")
        self.team_deals = select(Opportunity.id).where(Opportunity.owner_id.in_(self.tree))

    def _deals(self, *extra: Any) -> Select[Any]:
        """The columns of a `Deal` (then `extra`), with account and owner names."""
        owner = aliased(User)
        return (select(Opportunity.id, Opportunity.name, Account.name, owner.name, Opportunity.amount,
                       Opportunity.currency, Opportunity.stage, Opportunity.close_date, *extra)
                .join(Account, Account.id == Opportunity.account_id).join(owner, owner.id == Opportunity.owner_id))

    def pipeline(self) -> Select[Any]:
        return (select(Opportunity.stage, Opportunity.currency, Opportunity.probability, func.count(),
                       func.sum(Opportunity.amount))
                .where(Opportunity.status == "open", Opportunity.owner_id.in_(self.tree))
                .group_by(Opportunity.stage, Opportunity.currency, Opportunity.probability))

    async def _listed(self, s: AsyncSession, query: Select[Any], where: ColumnElement[bool]) -> tuple[list[Any], int]:
        rows = list((await s.execute(query.where(where).limit(self.options.limit))).all())
        if len(rows) < self.options.limit:
            return rows, len(rows)
        total = (await s.execute(select(func.count()).select_from(Opportunity).where(where))).scalar_one()
        return rows, total

    async def history(self, s: AsyncSession, data: DigestData) -> None:
        """Stage moves, wins and losses, amount changes and slipped close dates, each deal's net
        change over the window (a deal moved there and back is no news)."""
        w = self.window
        rows = (await s.execute(
            select(OpportunityHistory.opportunity_id, OpportunityHistory.field, OpportunityHistory.old_value,
                   OpportunityHistory.new_value)
            .where(OpportunityHistory.opportunity_id.in_(self.team_deals),
                   OpportunityHistory.field.in_(("stage", "status", "amount", "close_date")),
                   OpportunityHistory.changed_at > w.start, OpportunityHistory.changed_at <= w.end)
            .order_by(OpportunityHistory.changed_at, OpportunityHistory.id)
        )).all()
        net: dict[tuple[int, str], list[str | None]] = {}
        for opp_id, name, old, new in rows:
            net.setdefault((opp_id, name), [old, new])[1] = new
        closed = {opp for (opp, name), (_, new) in net.items() if name == "status" and new in ("won", "lost")}
        picks: dict[str, list[tuple[int, str | None, str | None]]] = {"stage": [], "won": [], "lost": [],
                                                                    "amount": [], "close_date": []}
        for (opp_id, name), (old, new) in net.items():
            if old == new:
                continue
            if name == "status" and new in ("won", "lost"):
                picks[new].append((opp_id, old, new))
            elif name == "stage" and opp_id not in closed:
                picks["stage"].append((opp_id, old, new))
            elif name == "amount" and self._big_change(old, new):
                picks["amount"].append((opp_id, old, new))
            elif name == "close_date" and old is not None and new is not None and new > old:
                picks["close_date"].append((opp_id, old, new))
        limit = self.options.limit
        shown = {key: changes[::-1][:limit] for key, changes in picks.items()}  # the latest, if too many
        deals = await self._deal_rows(s, {opp for changes in shown.values() for opp, _, _ in changes})
        slips = await self._slip_counts(s, {opp for opp, _, _ in shown["close_date"]})
        for key, target in (("stage", "moved"), ("won", "won"), ("lost", "lost"), ("amount", "amounts"),
                            ("close_date", "slipped")):
            listed = [Change(deals[o], old, new, slips.get(o, 1)) for o, old, new in shown[key]]
            listed.sort(key=lambda c: -c.deal.amount)
            setattr(data, target, Listed(listed, len(picks[key])))

    def _big_change(self, old: str | None, new: str | None) -> bool:
        before, after = Decimal(old or 0), Decimal(new or 0)
        if before == 0:
            return after != 0
        return abs(after - before) * 100 / abs(before) >= self.options.amount_change_percent

    async def _deal_rows(self, s: AsyncSession, ids: set[int]) -> dict[int, Deal]:
        if not ids:
            return {}
        rows = (await s.execute(self._deals().where(Opportunity.id.in_(ids)))).all()
        return {row[0]: Deal(*row) for row in rows}

    async def _slip_counts(self, s: AsyncSession, ids: set[int]) -> dict[int, int]:
        if not ids:
            return {}
        rows = await s.execute(
            select(OpportunityHistory.opportunity_id, func.count())
            .where(OpportunityHistory.opportunity_id.in_(ids), OpportunityHistory.field == "close_date",
                   OpportunityHistory.new_value > OpportunityHistory.old_value)  # ISO dates compare as text
            .group_by(OpportunityHistory.opportunity_id))
        return {opp_id: count for opp_id, count in rows}

    async def captured(self, s: AsyncSession) -> Listed[Captured]:
        """Decisions and action items logged in the window and still standing, newest first."""
        w = self.window
        author = aliased(User)
        where = and_(TimelineEntry.opportunity_id.in_(self.team_deals), TimelineEntry.kind.in_(CAPTURED_KINDS),
                     TimelineEntry.retracted_at.is_(None),
                     TimelineEntry.occurred_at > w.start, TimelineEntry.occurred_at <= w.end)
        rows = (await s.execute(
            self._deals(TimelineEntry.kind, TimelineEntry.text, author.name, TimelineEntry.permalink,
                        TimelineEntry.occurred_at)
            .join(TimelineEntry, TimelineEntry.opportunity_id == Opportunity.id)
            .outerjoin(author, author.id == TimelineEntry.author_id)
            .where(where).order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc())
            .limit(self.options.limit)
        )).all()
        total = len(rows)
        if total == self.options.limit:
            total = (await s.execute(select(func.count()).select_from(TimelineEntry).where(where))).scalar_one()
        return Listed([Captured(Deal(*r[:8]), r[8], r[9] or "", r[10], r[11], r[12]) for r in rows], total)

    async def stale(self, s: AsyncSession) -> Listed[Stale]:
        """Open deals with no timeline activity for `stale_days` (and older than that), the
        longest-quiet first."""
        cutoff = self.window.end - timedelta(days=self.options.stale_days)
        recent = exists().where(TimelineEntry.opportunity_id == Opportunity.id, TimelineEntry.occurred_at > cutoff)
        where = and_(Opportunity.status == "open", Opportunity.owner_id.in_(self.tree),
                     Opportunity.created_at <= cutoff, ~recent)
        last = (select(func.max(TimelineEntry.occurred_at)).where(TimelineEntry.opportunity_id == Opportunity.id)
                .correlate(Opportunity).scalar_subquery())
        rows, total = await self._listed(
            s, self._deals(last.label("last")).order_by(last.asc().nulls_first(), Opportunity.amount.desc()), where)
        return Listed([Stale(Deal(*r[:8]), r[8]) for r in rows], total)

    async def closing(self, s: AsyncSession) -> Listed[Deal]:
        today = self.window.end.date()
        where = and_(Opportunity.status == "open", Opportunity.owner_id.in_(self.tree),
                     Opportunity.close_date >= today, Opportunity.close_date <= today + timedelta(days=CLOSING_DAYS))
        rows, total = await self._listed(s, self._deals().order_by(Opportunity.close_date, Opportunity.amount.desc()),
                                         where)
        return Listed([Deal(*r) for r in rows], total)

    async def rooms(self, s: AsyncSession) -> Listed[NewRoom]:
        w = self.window
        where = and_(DealRoom.opportunity_id.in_(self.team_deals), DealRoom.created_at > w.start,
                     DealRoom.created_at <= w.end, DealRoom.status.notin_(("cancelled",)))
        rows = (await s.execute(
            self._deals(DealRoom.platform, DealRoom.channel_name).join(DealRoom, DealRoom.opportunity_id == Opportunity.id)
            .where(where).order_by(DealRoom.created_at.desc()).limit(self.options.limit)
        )).all()
        total = len(rows)
        if total == self.options.limit:
            total = (await s.execute(select(func.count()).select_from(DealRoom).where(where))).scalar_one()
        return Listed([NewRoom(Deal(*r[:8]), r[8], r[9]) for r in rows], total)

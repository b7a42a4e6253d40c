"""`dealbot rooms`: reconcile the deal rooms with the CRM now, and list them.

`sync` queues what the periodic sweep would, plus a members check of every live room, then
works those outbox rows itself at the platform's pace (a running server works them too; the
pace is shared through the database) and reports what was done. Stopping it loses nothing:
the rows stay queued with their booked slots, and the next sync or any server carries on.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import typer
from sqlalchemy import func, select

from bot.cli_support import Progress, progress_bar, settings_or_exit, setup_logging
from bot.settings import Settings
from bot.slack.rooms import slack_deal_rooms
from crm_store import Store
from crm_store.models import Account, DealRoom, Opportunity, OutboxItem, User, utcnow
from deal_rooms.naming import room_name
from deal_rooms.rooms import DealRooms, RoomPlan
from handlers.format import clip, money

rooms_app = typer.Typer(help="Deal rooms: reconcile them with the CRM, list them.", no_args_is_help=True)
WATCH_EVERY_S = 0.5
PLAIN_PROGRESS_EVERY_S = 5.0
FOLLOW_UPS = ("room.staff", "room.card", "room.pin")  # what a created or reopened room is owed before it is ready
KEY_CHUNK = 500
SYNC_MARK = ":sync:"  # in the keys of the members checks a sync queues (counted with its own keys)
SHOWN = 10


@rooms_app.command("sync")
def sync(dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be done; change nothing.")) -> None:
    """Reconcile now: create missing rooms, invite missing members, close and reopen rooms.

    Goes at the platform's pace with progress shown, then reports what it did. Ctrl-C stops
    safely: the rest stays queued and the next sync (or `dealbot serve`) carries on."""
    setup_logging()
    settings = settings_or_exit()
    if not settings.slack_enabled:
        typer.echo("Deal rooms need a chat platform: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
                   "(or SLACK_APP_TOKEN).", err=True)
        raise typer.Exit(2)
    try:
        code = asyncio.run(_sync(settings, dry_run))
    except KeyboardInterrupt:
        typer.echo("Stopped. Nothing is lost: the rest stays queued, and `dealbot serve` or the next "
                   "`dealbot rooms sync` carries on where this stopped.", err=True)
        code = 130
    raise typer.Exit(code)


@rooms_app.command("list")
def list_(status: str | None = typer.Option(None, help="Only rooms in this state: active, closed, archived, "
                                                        "left (archived by hand), creating, claimed.")) -> None:
    """Every deal room: channel, state, deal, amount, stage and owner."""
    setup_logging()
    settings = settings_or_exit()

    async def run() -> None:
        store = await Store.open(settings.database_url)
        try:
            typer.echo(await _listing(store, status))
        finally:
            await store.close()

    asyncio.run(run())


async def _sync(settings: Settings, dry_run: bool) -> int:
    store = await Store.open(settings.database_url)
    try:
        rooms = slack_deal_rooms(store, settings)
        if dry_run:
            typer.echo(_describe(await rooms.plan(), rooms, settings.slack_tier2_per_minute))
            return 0
        started = utcnow()
        keys = await rooms.sync()
        store.outbox.start(platforms={rooms.platform})
        try:
            with progress_bar() as progress:
                rows = await _watch(store, rooms.platform, keys, started, progress)
        finally:
            await store.outbox.stop(drain_timeout_s=0)  # stop now; what is left stays queued
        typer.echo(_report(rows))
        return 1 if any(row.status == "failed" for row in rows) else 0
    finally:
        await store.close()


async def _watch(store: Store, platform: str, keys: list[str], started: datetime,
                 progress: Progress | None) -> list[OutboxItem]:
    """Wait until the sync's rows, and the follow-ups of the rooms it made, are done or failed;
    then return them all for the report."""
    shown_at, shown = 0.0, -1
    while True:
        finished, total = await _counts(store, platform, keys, started)
        if progress is not None:
            progress("Deal rooms", finished, total)
        elif finished != shown and time.monotonic() - shown_at >= PLAIN_PROGRESS_EVERY_S:
            print(f"deal rooms: {finished} of {total} operations done", file=sys.stderr, flush=True)
            shown_at, shown = time.monotonic(), finished
        if finished == total:
            return await _rows(store, platform, keys, started)
        await asyncio.sleep(WATCH_EVERY_S)


def _watched(platform: str, keys: list[str], started: datetime) -> list[Any]:
    """Conditions for the rows a sync watches: its own keys (in chunks), and follow-ups."""
    chunks = [OutboxItem.idempotency_key.in_(keys[at:at + KEY_CHUNK]) for at in range(0, len(keys), KEY_CHUNK)]
    follow_ups = (OutboxItem.platform == platform) & (OutboxItem.created_at >= started) \
        & OutboxItem.operation.in_(FOLLOW_UPS) & ~OutboxItem.idempotency_key.contains(SYNC_MARK)
    return [*chunks, follow_ups]


async def _counts(store: Store, platform: str, keys: list[str], started: datetime) -> tuple[int, int]:
    """(finished, total) of the watched rows, counted in the database (the watch polls often)."""
    finished = total = 0
    async with store.session() as s:
        for where in _watched(platform, keys, started):
            for status, n in await s.execute(select(OutboxItem.status, func.count()).where(where)
                                             .group_by(OutboxItem.status)):
                total += n
                finished += n if status != "pending" else 0
    return finished, total


async def _rows(store: Store, platform: str, keys: list[str], started: datetime) -> list[OutboxItem]:
    found: dict[int, OutboxItem] = {}
    async with store.session() as s:
        for where in _watched(platform, keys, started):
            found.update((row.id, row) for row in (await s.execute(select(OutboxItem).where(where))).scalars())
    return sorted(found.values(), key=lambda row: row.id)


def _report(rows: Sequence[OutboxItem]) -> str:
    done = [row for row in rows if row.status == "done"]
    results: dict[str, list[dict[str, Any]]] = {}
    for row in done:
        results.setdefault(row.operation, []).append(row.result or {})
    lines = []
    created = [r["name"] for r in results.get("room.create", []) if r.get("name")]
    if created:
        lines.append(f"Created {_count(len(created), 'room')}: {_names(created)}.")
    invited = [len(r.get("invited", [])) for r in results.get("room.staff", [])]
    if sum(invited):
        lines.append(f"Invited {_count(sum(invited), 'person', 'people')} into "
                     f"{_count(sum(1 for n in invited if n), 'room')}.")
    absent = sum(len(r.get("absent", [])) for r in results.get("room.staff", []))
    if absent:
        lines.append(f"{_count(absent, 'person', 'people')} of the deal teams "
                     f"{'is' if absent == 1 else 'are'} not on the platform; the rooms name them.")
    closed = [r for r in results.get("room.close", []) if "decisions" in r]
    if closed:
        lines.append(f"Posted the closing summary in {_count(len(closed), 'room')} of won or lost deals; "
                     "they are archived after DEAL_ROOM_ARCHIVE_DELAY_HOURS.")
    reopened = [r for r in results.get("room.reopen", []) if r.get("reopened")]
    if reopened:
        lines.append(f"Unarchived {_count(len(reopened), 'room')} of reopened deals.")
    failed = [row for row in rows if row.status == "failed"]
    for row in failed[:SHOWN]:
        lines.append(f"Failed: {row.operation} (room {row.payload.get('room_id')}): {row.last_error}")
    if len(failed) > SHOWN:
        lines.append(f"… and {len(failed) - SHOWN} more failures (see the outbox table).")
    checked = Counter(row.operation for row in rows)["room.staff"]
    if not lines:
        lines.append(f"Every deal room was in order ({_count(checked, 'room')} checked).")
    return "\n".join(lines)


def _describe(plan: RoomPlan, rooms: DealRooms, per_minute: float) -> str:
    lines = []
    if plan.create:
        minutes = len(plan.create) / per_minute
        pace = f"about {minutes:.0f} min" if minutes >= 1 else "under a minute"
        lines.append(f"Would create {_count(len(plan.create), 'room')} (at {per_minute:g} a minute, {pace}):")
        for opp, room in plan.create[:SHOWN * 2]:
            name = room.channel_name if room is not None and room.channel_name else \
                room_name(rooms.settings.template, opp.account.name, opp.name, rooms.port.names)
            lines.append(f"  #{name}  {opp.name} ({opp.account.name}, {money(opp.amount, opp.currency)})")
        if len(plan.create) > SHOWN * 2:
            lines.append(f"  … and {len(plan.create) - SHOWN * 2} more")
    if plan.close:
        lines.append(f"Would close {_count(len(plan.close), 'room')} of won or lost deals: "
                     f"{_names([room.channel_name or '?' for _, room in plan.close])}.")
    if plan.reopen:
        lines.append(f"Would unarchive {_count(len(plan.reopen), 'room')} of reopened deals: "
                     f"{_names([room.channel_name or '?' for _, room in plan.reopen])}.")
    lines.append(f"Would check the members of {_count(len(plan.live), 'live room')}.")
    lines.append("Nothing was changed (dry run).")
    return "\n".join(lines)


async def _listing(store: Store, status: str | None) -> str:
    query = (select(DealRoom.channel_name, DealRoom.status, DealRoom.platform, Opportunity.name, Account.name,
                    Opportunity.amount, Opportunity.currency, Opportunity.stage, User.name)
             .join(Opportunity, Opportunity.id == DealRoom.opportunity_id)
             .join(Account, Account.id == Opportunity.account_id).join(User, User.id == Opportunity.owner_id)
             .order_by(DealRoom.platform, DealRoom.channel_name, DealRoom.id))
    if status:
        query = query.where(DealRoom.status == status)
    async with store.session() as s:
        rows = (await s.execute(query)).all()
    if not rows:
        return f"No deal rooms{f' in state {status!r}' if status else ''} yet. " \
               "`dealbot rooms sync` creates the missing ones."
    table = [("Channel", "State", "Platform", "Deal", "Account", "Amount", "Stage", "Owner")]
    table += [(f"#{channel}" if channel else "(not made yet)", state, platform, clip(deal, 40), clip(account, 30),
               money(amount, currency), stage, owner)
              for channel, state, platform, deal, account, amount, currency, stage, owner in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    return "\n".join([*lines, f"{_count(len(rows), 'room')}."])


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(f"#{name}" for name in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")

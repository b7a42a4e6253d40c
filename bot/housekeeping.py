"""Periodic upkeep inside `dealbot serve`, on APScheduler's asyncio scheduler.

Every replica runs the same jobs; each is harmless to run twice (a purge deletes what is
already gone, a digest is claimed once per period in the database), so no coordination is needed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.digests import TICK_JOB, Digests
from crm_store import Store
from crm_store.chat_events import ChatEvents
from crm_store.models import utcnow
from deal_rooms.rooms import DealRooms
from transcripts.capture import purge_transcripts

log = logging.getLogger("dealbot.housekeeping")
PURGE_EVERY = timedelta(minutes=10)
FIRST_RUN_AFTER = timedelta(minutes=1)  # not in the middle of start-up
PURGE_JOB = "forget-processed-events"
SWEEP_EVERY = timedelta(minutes=15)
SWEEP_JOB = "reconcile-deal-rooms-{platform}"
RETENTION_EVERY = timedelta(hours=1)
RETENTION_JOB = "purge-old-transcript-text"


async def forget_processed_events(events: ChatEvents) -> None:
    try:
        deleted = await events.purge()
    except Exception:  # the next run tries again; nothing is lost by waiting
        log.exception("purging processed event ids failed")
        return
    if deleted:
        log.info("forgot old processed event ids", extra={"rows": deleted})


async def reconcile_rooms(rooms: DealRooms) -> None:
    """The safety net under the change events: whatever a lost event left behind is caught up."""
    try:
        looked_at = await rooms.sweep()
    except Exception:
        log.exception("reconciling deal rooms failed", extra={"platform": rooms.platform})
        return
    log.info("deal rooms reconciled", extra={"platform": rooms.platform, "deals": looked_at})


async def apply_retention(store: Store, keep: timedelta) -> None:
    """`TRANSCRIPT_RETENTION_DAYS`: drop old transcript text; the timeline entries stay."""
    try:
        purged = await purge_transcripts(store, utcnow() - keep)
    except Exception:
        log.exception("purging old transcript text failed")
        return
    if purged:
        log.info("purged old transcript text", extra={"messages": purged})


async def send_due_digests(digests: Digests) -> None:
    try:
        claimed = await digests.tick()
    except Exception:  # the database is away: the next minute's tick catches up (grace window)
        log.exception("looking for due digests failed")
        return
    if claimed:
        log.info("digests claimed for sending", extra={"digests": claimed})


def create_scheduler(store: Store, events: ChatEvents | None, rooms: list[DealRooms],
                     retention: timedelta | None = None, digests: Digests | None = None) -> AsyncIOScheduler:
    """The scheduler with the upkeep jobs and the digests; started and stopped with the server."""
    scheduler = AsyncIOScheduler(timezone=timezone.utc)
    if digests is not None:  # at second 0 of every minute: digests are due on the minute
        scheduler.add_job(send_due_digests, "cron", args=[digests], id=TICK_JOB, second=0, coalesce=True,
                          max_instances=1, misfire_grace_time=50)
    if retention is not None:
        scheduler.add_job(apply_retention, "interval", args=[store, retention], id=RETENTION_JOB,
                          seconds=RETENTION_EVERY.total_seconds(), coalesce=True, max_instances=1,
                          next_run_time=datetime.now(timezone.utc) + FIRST_RUN_AFTER)
    for platform_rooms in rooms:
        scheduler.add_job(reconcile_rooms, "interval", args=[platform_rooms],
                          id=SWEEP_JOB.format(platform=platform_rooms.platform),
                          seconds=SWEEP_EVERY.total_seconds(), coalesce=True, max_instances=1,
                          next_run_time=datetime.now(timezone.utc) + FIRST_RUN_AFTER)
    if events is not None:
        scheduler.add_job(forget_processed_events, "interval", args=[events], id=PURGE_JOB,
                          seconds=PURGE_EVERY.total_seconds(), coalesce=True, max_instances=1,
                          next_run_time=datetime.now(timezone.utc) + FIRST_RUN_AFTER)
    return scheduler

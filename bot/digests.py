"""Digests inside `dealbot serve`: find what is due, claim it once, send it through the outbox.

Every replica ticks once a minute (APScheduler). A tick reads the subscriptions whose
`next_due_at` has come, from the database, so a subscription made or changed anywhere counts
from the next tick, without a restart. For each, the latest scheduled occurrence is claimed as
its period: sent when it is at most the grace window old (a server that was down catches up
once), skipped and logged when older. The claim and the send's outbox row are one transaction;
the send records each step (message posted, chart uploaded) so a retry never posts twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from crm_store import Store, digests
from crm_store.digest_content import Window
from crm_store.models import User, utcnow
from crm_store.outbox import Claimed, GiveUp, Queued, Retry, worker_name
from deal_rooms.port import ChannelGone, RateLimited, Refused
from handlers import texts
from handlers.digest import Built, build, chart_bars, zone_of
from handlers.digest_chart import pipeline_chart
from handlers.digest_schedule import DigestSettings, Schedule
from handlers.reply import Reply

log = logging.getLogger("dealbot.digests")
TICK_JOB = "send-due-digests"


@dataclass(frozen=True, slots=True)
class Chart:
    png: bytes
    title: str
    alt: str


class DirectMessages(Protocol):
    """How a platform delivers a digest to one person (Slack and Teams implement it in `bot/`)."""

    platform: str

    async def open_dm(self, user: User) -> str | None:
        """The bot's direct conversation with `user`; None when they are not on the platform."""

    async def post_dm(self, conversation: str, message: Reply, chart: Chart | None) -> str:
        """Post the digest (platforms that inline images put the chart in it); its message ref."""

    async def attach_chart(self, conversation: str, chart: Chart) -> str | None:
        """Add the chart after the message (an upload); None where `post_dm` inlined it."""


class Digests:
    def __init__(self, store: Store, settings: DigestSettings, ports: dict[str, DirectMessages]) -> None:
        self.store, self.settings, self.ports = store, settings, ports
        self.owner = worker_name()
        for platform in ports:
            store.outbox.register(platform, digests.SEND, self.send)

    # -- scheduling -------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """Claim every digest that is due; the number claimed to be sent."""
        now = now or datetime.now(timezone.utc)
        claimed = 0
        for due in await digests.due(self.store, now, self.ports):
            try:
                claimed += await self._claim_due(due, now)
            except Exception:  # one broken subscription must not hold up everyone else's digest
                log.exception("claiming a digest failed", extra={"subscription": due.subscription_id})
        return claimed

    async def _claim_due(self, due: digests.Due, now: datetime) -> int:
        zone = zone_of(due.time_zone, self.settings)
        schedule = Schedule.of(due.cadence, due.local_time, due.weekday, str(zone))
        occurrence = schedule.last_at_or_before(now)
        upcoming = schedule.next_after(now)
        late = now - occurrence
        if occurrence < due.next_due_at:  # the schedule changed to a later time: nothing due yet
            await digests.claim_nothing(self.store, due.subscription_id, upcoming, due.next_due_at)
            return 0
        status = "claimed" if late <= self.settings.grace else "skipped"
        claim = digests.Claim(due.subscription_id, schedule.period_key(occurrence), occurrence, status,
                              next_due_at=upcoming, expected_due=due.next_due_at)
        run_id = await digests.claim(self.store, claim, owner=self.owner, send=_send_row)
        if run_id is not None and status == "skipped":
            log.warning("digest skipped: due longer ago than the grace window", extra={
                "subscription": due.subscription_id, "period": claim.period_key,
                "late_minutes": round(late.total_seconds() / 60), "grace_hours": self.settings.grace.total_seconds() / 3600})
        return 1 if run_id is not None and status == "claimed" else 0

    async def send_now(self, user_id: int, now: datetime | None = None) -> int | None:
        """`dealbot digest --send-now`: a digest up to now, outside the schedule (once a minute at most)."""
        now = now or datetime.now(timezone.utc)
        sub = await digests.subscription(self.store, user_id)
        if sub is None:
            return None
        return await digests.claim(self.store, digests.Claim(sub.id, f"now:{now:%Y-%m-%dT%H:%M}", now),
                                   owner=self.owner, send=_send_row)

    async def preview(self, user: User, now: datetime | None = None) -> Built:
        """The digest `user` would get now: since their last one (or over a day)."""
        now = now or datetime.now(timezone.utc)
        sub = await digests.subscription(self.store, user.id)
        last = await digests.last_run(self.store, sub.id) if sub else None
        start = last.window_end if last and last.window_end else now - digests.PERIOD[sub.cadence if sub else "daily"]
        return await build(self.store, user.id, Window(start, now), self.settings,
                           time_zone=(sub.time_zone if sub else None) or user.time_zone,
                           previous=last.snapshot if last else None)

    # -- sending (the outbox handler) ---------------------------------------------------------------

    async def send(self, item: Claimed) -> dict[str, Any] | None:
        """The outbox handler. A send that fails for good leaves its run "failed" unless the
        message got out, so the next digest covers the period instead of skipping it."""
        run_id = int(item.payload["run_id"])
        try:
            return await self._deliver(run_id)
        except Exception as error:
            if isinstance(error, GiveUp) or item.attempts + 1 >= self.store.outbox.max_attempts:
                await digests.fail(self.store, run_id)
            raise

    async def _deliver(self, run_id: int) -> dict[str, Any]:
        run = await digests.run(self.store, run_id)
        if run is None or run.status in ("sent", "cancelled", "undeliverable"):
            return {"status": run.status if run else "gone"}
        sub, user = run.subscription, run.subscription.user
        if not sub.enabled or user.erased_at is not None or run.window_start is None or run.window_end is None:
            await digests.record(self.store, run.id, status="cancelled")
            return {"status": "cancelled"}
        port = self.ports[sub.platform]
        previous = await digests.previous_snapshot(self.store, run)
        built = await build(self.store, user.id, Window(run.window_start, run.window_end), self.settings,
                            time_zone=sub.time_zone or user.time_zone, previous=previous)
        chart = await self.chart(built)
        try:
            conversation = await port.open_dm(user)
            if conversation is None:
                log.warning("digest not delivered: the user is not on the platform",
                            extra={"subscription": sub.id, "platform": sub.platform})
                await digests.record(self.store, run.id, status="undeliverable")
                return {"status": "undeliverable"}
            if run.message_ref is None:
                ref = await port.post_dm(conversation, built.reply, chart)
                await digests.record(self.store, run.id, status="posted", message_ref=ref,
                                     snapshot=built.data.snapshot())
            if chart is not None and run.file_ref is None:
                file_ref = await port.attach_chart(conversation, chart)
                if file_ref is not None:
                    await digests.record(self.store, run.id, file_ref=file_ref)
        except RateLimited as limited:
            raise Retry(str(limited), limited.after_s) from limited
        except (Refused, ChannelGone) as refusal:
            raise GiveUp(str(refusal)) from refusal
        await digests.record(self.store, run.id, status="sent", sent_at=utcnow())
        log.info("digest sent", extra={"subscription": sub.id, "period": run.period_key, "platform": sub.platform})
        return {"status": "sent"}

    async def chart(self, built: Built) -> Chart | None:
        """The pipeline chart, drawn off the event loop; none for a digest that says nothing."""
        if built.data.nothing_moved or not built.data.pipeline:
            return None
        currency, bars = chart_bars(built.data)
        png = await asyncio.to_thread(pipeline_chart, bars, currency=currency, title=texts.DIGEST_CHART_TITLE)
        return Chart(png, texts.DIGEST_CHART_TITLE, texts.DIGEST_CHART_ALT)


def _send_row(run_id: int, platform: str) -> Queued:
    return Queued(platform, digests.SEND, f"digest:{run_id}", {"run_id": run_id})

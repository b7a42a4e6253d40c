"""Prometheus metrics of one server, in its own registry (no process-wide globals)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from crm_store import Store
from crm_store.models import OutboxItem, utcnow

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DB_TIMEOUT_S = 2.0
log = logging.getLogger("dealbot.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dealbot_http_requests", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("dealbot_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.upserts = Counter("dealbot_upserts", "Items upserted through the API by kind and result",
                               ["kind", "status"], registry=self.registry)
        self.events = Counter("dealbot_events_processed", "Platform and change events processed",
                              ["source"], registry=self.registry)
        self.outbox_depth = Gauge("dealbot_outbox_depth", "Outbox items waiting to be done", registry=self.registry)
        self.outbox_failed = Gauge("dealbot_outbox_failed", "Outbox items that failed for good (see last_error)",
                                   registry=self.registry)
        self.outbox_age = Gauge("dealbot_outbox_oldest_age_seconds", "Age of the oldest pending outbox item",
                                registry=self.registry)

    async def render(self, store: Store) -> bytes:
        """The registry as Prometheus text. With the database down the outbox gauges are NaN
        (unknown) and the rest is still served: the request counters are what shows the outage."""
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                async with store.session() as s:
                    depth, oldest = (await s.execute(
                        select(func.count(), func.min(OutboxItem.created_at)).where(OutboxItem.status == "pending")
                    )).one()
                    failed = (await s.execute(select(func.count()).where(OutboxItem.status == "failed"))).scalar_one()
        except Exception as error:  # any failure: the database cannot say
            log.warning("outbox depth unavailable", extra={"error": type(error).__name__})
            for gauge in (self.outbox_depth, self.outbox_age, self.outbox_failed):
                gauge.set(math.nan)
        else:
            self.outbox_depth.set(depth)
            self.outbox_failed.set(failed)
            self.outbox_age.set((utcnow() - oldest).total_seconds() if oldest is not None else 0)
        return generate_latest(self.registry)


def route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


CONTENT_TYPE = CONTENT_TYPE_LATEST

"""`dealbot serve`: one aiohttp server for the REST API, health and metrics (and, with their
issues, Slack events and Bot Framework activities).

A SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish (a bulk upsert
commits or rolls back as a whole), then closes the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from sqlalchemy import text

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import api, api_digests
from bot.housekeeping import create_scheduler
from bot.metrics import CONTENT_TYPE, Handler, Metrics, route_name
from bot.digests import Digests, DirectMessages
from bot.settings import Settings, capture_settings, digest_settings
from bot.slack.app import web_client
from bot.slack.digests import SlackDirect
from bot.slack.rooms import slack_deal_rooms
from crm_store import Store
from bot.slack.app import SlackAdapter
from crm_store.events import OpportunityChanged
from deal_rooms.rooms import DealRooms
from crm_store.chat_events import ChatEvent, ChatEvents
from handlers.capture import CaptureTexts
from handlers.dispatch import Dispatcher
from bot.teams.app import TeamsAdapter
from bot.teams.runtime import teams_runtime
from transcripts.capture import Capture, Whisper

log = logging.getLogger("dealbot.server")
SLACK = web.AppKey("slack", SlackAdapter)
TEAMS = web.AppKey("teams", TeamsAdapter)
SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
ROOMS = web.AppKey("rooms", list[DealRooms])  # one per chat platform
HEALTH_TIMEOUT_S = 2.0
SHUTDOWN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0
OUTBOX_DRAIN_TIMEOUT_S = 20.0
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython default: 700)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, time and log every request (route pattern, never the query string or body)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_name(request)
        metrics = request.app[api.METRICS]
        metrics.requests.labels(route=route, method=request.method, status=str(status)).inc()
        metrics.latency.labels(route=route).observe(elapsed)
        log.info("request", extra={"method": request.method, "route": route, "status": status,
                                   "ms": round(elapsed * 1000, 1)})


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as a JSON body with a reason; unexpected ones logged with a reference."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.content_type == "application/json" or error.status < 400:
            raise
        reason = {413: f"request body too large (at most {api.MAX_BODY // (1024 * 1024)} MiB)",
                  404: "no such endpoint", 405: "method not allowed here"}.get(error.status, error.reason)
        return api.problem(error.status, reason)
    except Exception:
        ref = secrets.token_hex(4)
        log.exception("request failed", extra={"ref": ref, "route": route_name(request)})
        return api.problem(500, f"internal error (reference {ref})")


async def healthz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with request.app[api.STORE].engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as error:  # any failure means "not healthy"; say which kind
        return web.json_response({"status": "unavailable", "database": type(error).__name__}, status=503)
    return web.json_response({"status": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = await request.app[api.METRICS].render(request.app[api.STORE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _outbox_worker(app: web.Application) -> AsyncIterator[None]:
    outbox = app[api.STORE].outbox
    outbox.start()
    yield
    await outbox.stop(drain_timeout_s=OUTBOX_DRAIN_TIMEOUT_S)


async def _scheduler_lifetime(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SCHEDULER]
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)


async def _slack_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Socket Mode connects once the app runs; on shutdown, answers still being worked on finish."""
    slack = app[SLACK]
    if slack.settings.slack_app_token:
        await slack.start_socket_mode()
    yield
    await slack.close()


def create_app(store: Store, settings: Settings, metrics: Metrics | None = None, *,
               outbox: bool = True) -> web.Application:
    """The one aiohttp app. With `outbox`, the app runs the outbox worker while it runs and
    drains it on shutdown, after in-flight requests (tests that inspect raw rows turn it off)."""
    app = web.Application(middlewares=[observe, errors, api.authenticate], client_max_size=api.MAX_BODY)
    app[api.STORE] = store
    app[api.TOKEN] = settings.dealbot_api_token.get_secret_value() if settings.dealbot_api_token else ""
    app[api.METRICS] = metrics = metrics or Metrics()

    async def count_change(event: OpportunityChanged) -> None:
        metrics.events.labels(source="sync").inc()

    def count_event(event: ChatEvent, first: bool) -> None:
        metrics.events.labels(source=event.platform if first else f"{event.platform}-duplicate").inc()

    store.changes.subscribe(count_change)
    store.outbox.lease_s = settings.outbox_lease_seconds
    if outbox:
        app.cleanup_ctx.append(_outbox_worker)
    events = ChatEvents(store, count_event) if settings.slack_enabled or settings.teams_enabled else None
    rooms: list[DealRooms] = []
    app[ROOMS] = rooms
    by_platform: dict[str, DealRooms] = {}
    direct: dict[str, DirectMessages] = {}
    whispers: list[Whisper] = []
    digest_options = digest_settings(settings)
    if settings.slack_enabled:
        slack_rooms = by_platform["slack"] = slack_deal_rooms(store, settings)
        direct["slack"] = SlackDirect(web_client(settings, retries=False))
        whispers.append(slack_rooms.port)
    teams = teams_runtime(store, settings) if settings.teams_enabled else None
    if teams is not None:
        direct["teams"] = teams.direct
        whispers.append(teams.direct)
        if teams.rooms is not None:
            by_platform["teams"] = teams.rooms
    rooms += by_platform.values()
    dispatcher = Dispatcher(store, rooms=by_platform, digests=digest_options)
    if events is not None:
        Capture(store, events, capture_settings(settings), CaptureTexts(), whispers=whispers)
    if settings.slack_enabled:
        assert events is not None
        app[SLACK] = SlackAdapter(store, settings, dispatcher, events)
        app.cleanup_ctx.append(_slack_lifetime)
        if not settings.slack_app_token:
            app.router.add_post("/slack/events", app[SLACK].handle)
    if teams is not None:
        assert events is not None
        app[TEAMS] = TeamsAdapter(store, settings, dispatcher, events, teams.cloud, teams.direct)
        app.router.add_post("/api/messages", app[TEAMS].handle)
    retention = timedelta(days=settings.transcript_retention_days) if settings.transcript_retention_days else None
    digests = Digests(store, digest_options, direct) if direct else None
    app[SCHEDULER] = create_scheduler(store, events, rooms, retention, digests)
    app.cleanup_ctx.append(_scheduler_lifetime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    api.add_routes(app)
    api_digests.add_routes(app, digest_options)
    return app


def _settle_memory() -> None:
    """Move the objects built at start-up (name indexes, caches) out of the garbage collector's
    sight and collect young objects less often. A 5,000-item bulk allocates hundreds of thousands
    of short-lived objects; with the defaults the collector rescans the whole long-lived heap again
    and again, which cost a quarter of bulk-upsert throughput (benchmarks/ingest.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def serve(settings: Settings, host: str, port: int) -> None:
    store = await Store.open(settings.database_url)
    try:
        await store.warm_up()
        _settle_memory()
        runner = web.AppRunner(create_app(store, settings), access_log=None, handle_signals=False,
                               shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("listening", extra={"host": host, "port": port, "api": bool(settings.dealbot_api_token)})
        await stop.wait()
        log.info("stopping: finishing in-flight requests, then due outbox work")
        await runner.cleanup()
    finally:
        try:  # a request cancelled mid-query can leave a driver connection that never closes
            await asyncio.wait_for(store.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("the database did not close in time; exiting anyway")
    log.info("stopped")

"""`dealbot digest`: print someone's digest now, or send it now outside their schedule.

`--send-now` claims a digest like the scheduler does (once per minute at most, however often it
is run), then works the outbox row itself until the digest is delivered or has failed; a running
server would deliver it too, so stopping early loses nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from sqlalchemy import func, select

from bot.cli_support import settings_or_exit, setup_logging
from bot.digests import Digests, DirectMessages
from bot.render_text import render
from bot.settings import Settings, digest_settings
from crm_store import Store, digests
from crm_store.models import DigestRun, OutboxItem, User

WAIT_EVERY_S = 0.2
SEND_TIMEOUT_S = 120.0


def digest(
    preview: str | None = typer.Option(None, "--preview", metavar="EMAIL", help="Print EMAIL's digest now."),
    send_now: str | None = typer.Option(None, "--send-now", metavar="EMAIL",
                                        help="Send EMAIL's digest now, by direct message."),
    chart: Path | None = typer.Option(None, "--chart", help="With --preview: also write the chart to this PNG."),
) -> None:
    """Print a manager's digest (since their last one), or send it now."""
    setup_logging()
    if (preview is None) == (send_now is None):
        typer.echo("Give one of --preview EMAIL or --send-now EMAIL.", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    email = preview or send_now or ""
    raise typer.Exit(asyncio.run(_preview(settings, email, chart) if preview else _send(settings, email)))


async def _user(store: Store, email: str) -> User | None:
    async with store.session() as s:
        return (await s.execute(select(User).where(func.lower(User.email) == email.strip().lower(),
                                                   User.erased_at.is_(None)))).scalar_one_or_none()


async def _preview(settings: Settings, email: str, chart: Path | None) -> int:
    store = await Store.open(settings.database_url)
    try:
        user = await _user(store, email)
        if user is None:
            typer.echo(f"No CRM user has the email {email}.", err=True)
            return 1
        service = Digests(store, digest_settings(settings), {})
        built = await service.preview(user)
        typer.echo(render(built.reply))
        if chart is not None:
            drawn = await service.chart(built)
            if drawn is None:
                typer.echo("No chart: this digest has nothing to chart.", err=True)
            else:
                chart.write_bytes(drawn.png)
                typer.echo(f"Chart written to {chart}.", err=True)
        return 0
    finally:
        await store.close()


def _ports(settings: Settings) -> dict[str, DirectMessages]:
    ports: dict[str, DirectMessages] = {}
    if settings.slack_enabled:
        from bot.slack.app import web_client
        from bot.slack.digests import SlackDirect

        ports["slack"] = SlackDirect(web_client(settings, retries=False))
    return ports


async def _send(settings: Settings, email: str) -> int:
    store = await Store.open(settings.database_url)
    try:
        user = await _user(store, email)
        sub = await digests.subscription(store, user.id) if user else None
        if user is None or sub is None or not sub.enabled:
            typer.echo(f"{email} has no digest subscription. They subscribe with `/crm digest daily`; an admin "
                       "can subscribe them through the REST API (PUT /api/v1/digest-subscriptions).", err=True)
            return 1
        ports = _ports(settings)
        if sub.platform not in ports:
            typer.echo(f"{email} gets digests on {sub.platform}, which is not configured here "
                       "(set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET for Slack).", err=True)
            return 2
        service = Digests(store, digest_settings(settings), ports)
        run_id = await service.send_now(user.id)
        if run_id is None:
            typer.echo("A digest for this minute was sent already; nothing was sent twice.", err=True)
            return 0
        store.outbox.start(platforms={sub.platform})
        try:
            status = await asyncio.wait_for(_finished(store, run_id), SEND_TIMEOUT_S)
        except TimeoutError:
            typer.echo("Still not delivered (the platform is slow or limiting); it stays queued and "
                       "`dealbot serve` delivers it.", err=True)
            return 1
        finally:
            await store.outbox.stop(drain_timeout_s=0)
        typer.echo(f"Digest for {email}: {status}.")
        return 0 if status == "sent" else 1
    finally:
        await store.close()


async def _finished(store: Store, run_id: int) -> str:
    """The run's final state: sent, or why not (the outbox row's last error when it failed)."""
    while True:
        async with store.session() as s:
            status = (await s.execute(select(DigestRun.status).where(DigestRun.id == run_id))).scalar_one()
            row = (await s.execute(select(OutboxItem.status, OutboxItem.last_error).where(
                OutboxItem.idempotency_key == f"digest:{run_id}"))).one_or_none()
        if status in ("sent", "undeliverable", "cancelled"):
            return status
        if row is not None and row[0] == "failed":
            return f"failed ({row[1]})"
        await asyncio.sleep(WAIT_EVERY_S)

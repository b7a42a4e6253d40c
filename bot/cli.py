"""The `dealbot` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import typer

from bot.settings import Settings, SettingsError, load_settings
from bot.shell import SHELL_HELP, ShellAdapter, describe
from crm_store import Actor, Store
from crm_store import demo, migrate

app = typer.Typer(help="Dealbot: a CRM inside Slack and Microsoft Teams.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
log = logging.getLogger("dealbot")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def _setup_logging(level: int = logging.WARNING) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
) -> None:
    """Run the server: REST API, health and metrics (Slack and Teams endpoints with their issues)."""
    from bot import logs
    from bot.server import serve as run_server

    logs.setup(logging.INFO, structured=True)
    settings = _settings()
    asyncio.run(run_server(settings, host, port))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the database migrations up to the newest schema."""
    _setup_logging(logging.INFO)
    settings = _settings()

    async def run() -> None:
        store = await Store.open(settings.database_url, upgrade=False)
        try:
            before = await migrate.upgrade(store.engine)
        finally:
            await store.close()
        head = migrate.head_revision()
        typer.echo(f"Database at revision {head}" + ("" if before == head else f" (was {before or 'empty'})"))

    asyncio.run(run())


def _interactive_lines() -> Iterator[str]:
    while True:
        try:
            yield input("you › ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            return


@app.command()
def shell(
    demo_data: bool = typer.Option(False, "--demo", help="Start on a fresh SQLite file filled with a sample company."),
    as_email: str | None = typer.Option(None, "--as", help="Act as the CRM user with this email."),
) -> None:
    """A local console that behaves like a chat with Dealbot (reads piped input too)."""
    _setup_logging()
    settings = _settings()

    async def run() -> int:
        workdir = tempfile.TemporaryDirectory(prefix="dealbot-demo-") if demo_data else None
        url = f"sqlite+aiosqlite:///{Path(workdir.name) / 'dealbot-demo.db'}" if workdir else settings.database_url
        store = await Store.open(url)
        try:
            if workdir:
                counts = await demo.load(store)
                typer.echo(
                    f"Demo company loaded: {counts['users']} users, {counts['accounts']:,} accounts, "
                    f"{counts['contacts']:,} contacts, {counts['opportunities']:,} deals (a fresh file, gone on exit)."
                )
            email = as_email or (demo.FEATURED.rep if workdir else None)
            actor = await store.actor_for(email=email) if email else Actor.unmapped("you")
            if email and not actor.is_mapped:
                typer.echo(f"No CRM user has the email {email!r}.", err=True)
                return 2
            adapter = ShellAdapter(store, actor)
            typer.echo(f"You are {describe(actor)}.")
            if workdir:
                people = demo.FEATURED
                typer.echo(f"Switch with /as EMAIL: {people.rep} (rep), {people.manager} (her manager), "
                           f"{people.admin} (admin).")
            interactive = sys.stdin.isatty()
            if interactive:
                typer.echo(SHELL_HELP + "\n")
            lines = _interactive_lines() if interactive else sys.stdin
            await adapter.run(lines, typer.echo, echo=not interactive)
            return 0
        finally:
            await store.close()
            if workdir:
                workdir.cleanup()

    raise typer.Exit(asyncio.run(run()))


def main() -> None:  # pragma: no cover - console entry point
    app()

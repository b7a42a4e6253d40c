"""The `dealbot` command line."""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import typer
from sqlalchemy import select

from bot import csv_import
from bot.cli_digest import digest
from bot.cli_rooms import rooms_app
from bot.cli_support import progress_bar, settings_or_exit, setup_logging
from bot.cli_teams import teams_app
from bot.settings import capture_settings, room_settings
from bot.shell import SHELL_HELP, ShellAdapter, bot_post, describe
from bot.shell_rooms import MemoryRooms
from crm_store import Actor, Store
from crm_store import admin_ops, demo, migrate
from crm_store.deals import recent_entries
from crm_store.models import Account
from crm_store.sync import Who

app = typer.Typer(help="Dealbot: a CRM inside Slack and Microsoft Teams.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
export_app = typer.Typer(help="Export data as CSV.", no_args_is_help=True)
app.add_typer(export_app, name="export")
app.add_typer(rooms_app, name="rooms")
app.add_typer(teams_app, name="teams")
app.command()(digest)
EXPORT_MAX_ENTRIES = 10_000_000
log = logging.getLogger("dealbot")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
) -> None:
    """Run the server: REST API, health and metrics (Slack and Teams endpoints with their issues)."""
    from bot import logs
    from bot.server import serve as run_server

    logs.setup(logging.INFO, structured=True)
    settings = settings_or_exit()
    asyncio.run(run_server(settings, host, port))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the database migrations up to the newest schema."""
    setup_logging(logging.INFO)
    settings = settings_or_exit()

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
    setup_logging()
    settings = settings_or_exit()

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
            # Deal rooms only on the demo's throw-away file: channels live in memory, and the
            # outbox that makes them would also take change events a server on a shared
            # database is waiting for.
            rooms = MemoryRooms(on_post=lambda channel, text: typer.echo(bot_post(channel, text))) \
                if workdir else None
            adapter = ShellAdapter(store, actor, rooms=rooms, room_settings=room_settings(settings),
                                   capture=capture_settings(settings))
            typer.echo(f"You are {describe(actor)}.")
            if workdir:
                people = demo.FEATURED
                typer.echo(f"Switch with /as EMAIL: {people.rep} (rep), {people.manager} (her manager), "
                           f"{people.admin} (admin).")
            interactive = sys.stdin.isatty()
            if interactive:
                typer.echo(SHELL_HELP + "\n")
            lines = _interactive_lines() if interactive else sys.stdin
            async with adapter:
                await adapter.run(lines, typer.echo, echo=not interactive)
            return 0
        finally:
            await store.close()
            if workdir:
                workdir.cleanup()

    raise typer.Exit(asyncio.run(run()))


# -- data operations: import, duplicates, merge, export ------------------------------------------


class ImportKind(str, Enum):
    users = "users"
    accounts = "accounts"
    contacts = "contacts"
    opportunities = "opportunities"


def _who() -> Who:
    return Who(via="cli", actor=os.environ.get("USER") or "cli")


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(2)


@app.command("import")
def import_(
    kind: ImportKind = typer.Argument(..., help="What the file holds."),
    file: Path = typer.Argument(..., help="A CSV file (comma, semicolon or tab separated); see docs/CSV.md.",
                                show_default=False),
    currency: str | None = typer.Option(None, help="Currency of opportunity rows that name none (e.g. USD)."),
) -> None:
    """Import users, accounts, contacts or opportunities from CSV (Salesforce/HubSpot exports too).

    Rows that cannot be imported are listed with line, column and reason, and written to FILE.rejected.csv; the rest is imported. Importing the same file again changes nothing. Columns: docs/CSV.md.
    """  # noqa: E501 (one paragraph, so that --help wraps it)
    setup_logging()
    settings = settings_or_exit()

    async def run() -> csv_import.ImportReport:
        store = await Store.open(settings.database_url)
        try:
            with progress_bar() as progress:
                return await csv_import.import_csv(store, kind.value, file, _who(), default_currency=currency,
                                                   progress=progress)
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except csv_import.UnusableInput as error:
        raise _fail(f"Cannot import {file}: {error}") from None
    for note in report.notes:
        typer.echo(f"Note: {note}", err=True)
    if report.unknown_columns:
        typer.echo(f"Warning: ignored columns that are not {kind.value} fields: "
                   + ", ".join(f'"{c}"' for c in report.unknown_columns) + " (see docs/CSV.md)", err=True)
    typer.echo("\n".join(csv_import.summary_lines(report)))


@app.command()
def duplicates(
    min_score: float = typer.Option(90, "--min-score", min=0, max=100,
                                    help="How alike two names must be (0-100; 100: equal once legal suffixes, "
                                         "case and accents are set aside)."),
) -> None:
    """List pairs of accounts that are probably the same company."""
    setup_logging()
    settings = settings_or_exit()

    async def run() -> list[admin_ops.DuplicatePair]:
        store = await Store.open(settings.database_url)
        try:
            return await admin_ops.duplicate_accounts(store, min_score)
        finally:
            await store.close()

    pairs = asyncio.run(run())
    if not pairs:
        typer.echo(f"No possible duplicate accounts at score {min_score:g} or more.")
        return
    rows = [("score", "account", "name", "account", "name")]
    rows += [(f"{p.score:.1f}", p.keep, p.keep_name, p.other, p.other_name) for p in pairs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        typer.echo("  ".join([row[0].rjust(widths[0]), *(c.ljust(w) for c, w in zip(row[1:4], widths[1:])), row[4]]))
    typer.echo(f"\n{len(pairs)} possible duplicate pair{'s' if len(pairs) != 1 else ''}. "
               "Merge one with: dealbot merge KEEP_ID DROP_ID")


@app.command()
def merge(
    keep_id: str = typer.Argument(..., help="External id of the account that stays."),
    drop_id: str = typer.Argument(..., help="External id of the account merged into it."),
) -> None:
    """Merge account DROP_ID into KEEP_ID: its contacts and opportunities (with their timelines) move over."""
    setup_logging()
    settings = settings_or_exit()

    async def run() -> str:
        if keep_id == drop_id:
            raise ValueError(f"cannot merge account {keep_id} into itself")
        store = await Store.open(settings.database_url)
        try:
            async with store.session() as s:
                rows = {a.external_id: a for a in (await s.execute(
                    select(Account).where(Account.external_id.in_([keep_id, drop_id])))).scalars()}
                merged_into = {a.id: a.external_id for a in (await s.execute(select(Account).where(
                    Account.id.in_([a.merged_into_id for a in rows.values() if a.merged_into_id])))).scalars()}
            for key in (keep_id, drop_id):
                if key not in rows:
                    raise LookupError(f"no account with external id {key!r}")
            keep, drop = rows[keep_id], rows[drop_id]
            if drop.merged_into_id is not None:
                raise ValueError(f"account {drop_id} was already merged into {merged_into.get(drop.merged_into_id)}")
            if keep.merged_into_id is not None:
                target = merged_into.get(keep.merged_into_id)
                raise ValueError(f"account {keep_id} was merged into {target}; merge into {target} instead")
            moved = await admin_ops.merge_accounts(store, keep_id, drop_id, _who())
        finally:
            await store.close()
        return (f"Merged {drop_id} \u201c{drop.name}\u201d into {keep_id} \u201c{keep.name}\u201d: moved "
                f"{_plural(moved['contacts'], 'contact')} and {_plural(moved['opportunities'], 'opportunity')}.")

    try:
        typer.echo(asyncio.run(run()))
    except (LookupError, ValueError) as error:
        raise _fail(f"Cannot merge: {error}.") from None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} " + (word[:-1] + "ies" if word.endswith("y") else word + "s")


@export_app.command("timeline")
def export_timeline(
    opportunity: str = typer.Option(..., "--opportunity", help="External id of the opportunity."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """An opportunity's whole timeline as CSV (the columns of the API's format=csv), newest first."""
    from bot.api import CSV_COLUMNS, timeline_rows

    setup_logging()
    settings = settings_or_exit()
    admin = Actor(user_id=0, name="CLI", role="admin")

    async def run() -> list[list[str]] | None:
        store = await Store.open(settings.database_url)
        try:
            opp = await store.opportunity(admin, external_id=opportunity)
            if opp is None:
                return None
            # One read, not pages: paging by id (before_id) can skip entries whose occurred_at
            # is out of step with their id, and an export must be complete.
            return timeline_rows(await recent_entries(store, admin, opp.id, limit=EXPORT_MAX_ENTRIES))
        finally:
            await store.close()

    rows = asyncio.run(run())
    if rows is None:
        raise _fail(f"No opportunity with external id {opportunity!r}.")
    if output is None:
        writer = csv.writer(sys.stdout)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        return
    try:
        with output.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    except OSError as error:
        raise _fail(f"Cannot write {output}: {error.strerror or error}.") from None
    typer.echo(f"Wrote {_plural(len(rows), 'timeline entry')} of {opportunity} to {output}.")


def main() -> None:  # pragma: no cover - console entry point
    app()

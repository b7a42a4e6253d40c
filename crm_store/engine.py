"""Async engines and session factory, tuned per database.

SQLite runs as a small server database: WAL so readers never wait for the writer, foreign keys
enforced, and a page cache big enough that bulk upserts do not re-read index pages. It allows
one writer at a time, so a process writes through one connection of its own (`writer_for`):
writers queue in order on that connection instead of sleeping in SQLite's busy handler, and a
transaction takes the write lock when it begins (``BEGIN IMMEDIATE``), so it can never fail
half-way with "database is locked" because another transaction committed first. The busy
timeout remains for other processes (``dealbot import`` while the server runs).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 64 * 1024  # per connection; the 2 MiB default thrashes once indexes outgrow it
WRITER_WAIT_S = 60.0  # how long a write may queue for the writer connection before failing


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _own_transactions(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver begins nothing itself; `_begin_immediate` does


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the engine for `url` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``)."""
    parsed = make_url(url)
    # Statement parameters can hold message text and personal data: keep them out of errors/logs.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        engine = create_async_engine(url, **kwargs)
    return engine


def writer_for(engine: AsyncEngine) -> AsyncEngine:
    """The engine for write transactions: on SQLite one queued connection, else `engine` itself."""
    if engine.dialect.name != "sqlite":
        return engine
    writer = create_async_engine(
        engine.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True,
        pool_size=1, max_overflow=0, pool_timeout=WRITER_WAIT_S,
    )
    event.listen(writer.sync_engine, "connect", _tune_sqlite)
    event.listen(writer.sync_engine, "connect", _own_transactions)
    event.listen(writer.sync_engine, "begin", _begin_immediate)
    return writer


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def claim_statement(session: AsyncSession, model: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` without its values, for ``execute(statement, rows)``:
    one compiled statement, cached across calls (the hot paths: a row per chat event)."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(model).on_conflict_do_nothing()


def insert_unless_present(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for either database: the claim idiom (a row already
    there, or being inserted by a concurrent transaction, is skipped rather than an error)."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(model).values(rows).on_conflict_do_nothing()

"""Shared fixtures: a real database per test, a small organisation, and the shell adapter.

SQLite: each test gets its own file, copied from one migrated template (migrating once per run
keeps the suite fast). PostgreSQL, when ``TEST_DATABASE_URL`` is set: one database migrated
once per run, emptied before each test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.shell import ShellAdapter
from crm_store import Store
from crm_store.engine import create_engine
from crm_store.migrate import upgrade
from crm_store.models import Base
from tests.org import Org, build_org

PG_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"

    async def migrate() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> bool:
    assert PG_URL is not None

    async def migrate() -> None:
        engine = create_engine(PG_URL)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return True


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, migrated database for this test."""
    if PG_URL:
        request.getfixturevalue("pg_migrated")
        return PG_URL
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "dealbot.db"
    shutil.copy(template, target)
    return f"sqlite+aiosqlite:///{target}"


async def _truncate(store: Store) -> None:
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    async with store.transaction() as s:
        await s.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = await Store.open(db_url, upgrade=False)
    if store.dialect == "postgresql":
        await _truncate(store)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def org(store: Store) -> Org:
    return await build_org(store)


@pytest.fixture
def shell(store: Store, org: Org) -> Callable[..., Awaitable[ShellAdapter]]:
    """``await shell("rep_a")`` -> a shell adapter acting as that person of the org."""

    async def make(who: str = "rep_a", channel_id: str | None = None) -> ShellAdapter:
        actor = await store.actor_for(email=org.email(who))
        assert actor.is_mapped, who
        return ShellAdapter(store, actor, channel_id=channel_id)

    return make

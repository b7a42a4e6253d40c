"""Migrations, database tuning and the unique constraints that every "exactly once" relies on."""

from __future__ import annotations

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from crm_store import Store
from crm_store.migrate import current_revision, head_revision, upgrade
from crm_store.models import (
    Base,
    DealRoom,
    DigestRun,
    DigestSubscription,
    OutboxItem,
    ProcessedEvent,
    TimelineEntry,
)
from crm_store.search import is_search_object
from tests.org import Org


async def test_runs_on_the_requested_backend(store: Store) -> None:
    wanted = "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite"
    assert store.dialect == wanted


async def test_schema_is_at_head_and_matches_the_models(store: Store) -> None:
    assert await current_revision(store.engine) == head_revision()
    # The full-text search objects of migration 0004 (FTS5 tables and their shadow tables on
    # SQLite, the generated tsvector columns and their GIN indexes on PostgreSQL) have no model:
    # they are left out of the comparison, exactly those and nothing else.
    opts = {"include_object": lambda obj, name, type_, reflected, compare_to: not is_search_object(
        name, type_, reflected, getattr(getattr(obj, "table", None), "name", None))}
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c, opts=opts), Base.metadata))
    assert diff == [], f"models and migrations disagree; write a migration: {diff}"


async def test_upgrade_is_idempotent(store: Store) -> None:
    assert await upgrade(store.engine) == head_revision()  # already there: nothing to do


async def test_sqlite_is_tuned_for_a_server(store: Store) -> None:
    if store.dialect != "sqlite":
        assert store.dialect == "postgresql"
        return
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() >= 5000


@pytest.mark.parametrize("make", [
    lambda o: DealRoom(opportunity_id=o.deals["acme_renewal"], platform="slack", channel_id=None),
    lambda o: TimelineEntry(opportunity_id=o.deals["acme_renewal"], kind="decision", source_platform="slack",
                            source_ref="C1:1700000000.0001"),
    lambda o: OutboxItem(idempotency_key="room:1:slack:create", platform="slack", operation="create", payload={}),
    lambda o: ProcessedEvent(platform="slack", event_id="Ev123"),
], ids=["room per deal and platform", "entry per source message", "outbox key", "event id"])
async def test_exactly_once_claims_are_unique_constraints(store: Store, org: Org, make) -> None:  # type: ignore[no-untyped-def]
    async with store.transaction() as s:
        s.add(make(org))
    with pytest.raises(IntegrityError):
        async with store.transaction() as s:
            s.add(make(org))


async def test_one_digest_per_subscription_and_period(store: Store, org: Org) -> None:
    async with store.transaction() as s:
        sub = DigestSubscription(user_id=org.users["mgr1"], cadence="daily")
        s.add(sub)
        await s.flush()
        s.add(DigestRun(subscription_id=sub.id, period_key="2026-11-23"))
    with pytest.raises(IntegrityError):
        async with store.transaction() as s:
            s.add(DigestRun(subscription_id=sub.id, period_key="2026-11-23"))


async def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError):
        async with store.transaction() as s:
            s.add(TimelineEntry(opportunity_id=999_999, kind="note", text="orphan"))

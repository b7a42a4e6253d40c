"""The sync engine's contract, on SQLite and PostgreSQL: idempotent, ordered, history-keeping."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import func, select

from crm_store import Store
from crm_store.models import AuditLog, DealTeamMember, Opportunity, OpportunityHistory, OutboxItem, TimelineEntry, User
from crm_store.records import AccountRecord, ContactRecord, OpportunityRecord, UserRecord
from crm_store.sync import CHUNK, Sync, Who
from tests.org import Org, snapshot

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)


def deal(**changes: object) -> OpportunityRecord:
    base = {"name": "Big Deal", "account_external_id": "A-acme", "amount": "100000", "currency": "usd",
            "stage": "Proposal", "owner_email": "rep.a@org.test", "close_date": "2026-12-31"}
    return OpportunityRecord.model_validate({**base, **changes})


async def count(store: Store, model: type) -> int:
    async with store.session() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_same_payload_twice_changes_nothing(store: Store, org: Org) -> None:
    sync = Sync(store, Who("api", "test"))
    assert [r.status for r in await sync.upsert("opportunities", [("BIG", deal())])] == ["created"]
    before = await snapshot(store)
    assert [r.status for r in await sync.upsert("opportunities", [("BIG", deal())])] == ["unchanged"]
    assert await snapshot(store) == before


async def test_every_tracked_change_is_history_timeline_and_one_event(store: Store, org: Org) -> None:
    sync = Sync(store, Who("api", "test"))
    await sync.upsert("opportunities", [("BIG", deal(team_emails=["se@org.test"]))])
    events_before = await count(store, OutboxItem)
    changed = deal(stage="Negotiation", amount="120000", close_date="2027-01-31", owner_email="rep.b@org.test",
                   status="won", team_emails=[])
    assert [r.status for r in await sync.upsert("opportunities", [("BIG", changed)])] == ["updated"]
    async with store.session() as s:
        history = {(h.field, h.old_value, h.new_value) for h in (await s.execute(select(OpportunityHistory))).scalars()}
        kinds = sorted(e.kind for e in (await s.execute(select(TimelineEntry))).scalars())
        opp = (await s.execute(select(Opportunity).where(Opportunity.external_id == "BIG"))).scalar_one()
        team = (await s.execute(select(func.count()).where(DealTeamMember.opportunity_id == opp.id))).scalar_one()
    assert history == {
        ("stage", "Proposal", "Negotiation"), ("amount", "100000.00", "120000.00"),
        ("close_date", "2026-12-31", "2027-01-31"), ("owner", str(org.users["rep_a"]), str(org.users["rep_b"])),
        ("status", "open", "won"), ("team", f"[{org.users['se']}]", "[]"),
    }
    assert kinds == ["amount_change", "close_date_change", "owner_change", "stage_change", "team_change", "won"]
    assert team == 0 and opp.closed_at is not None and opp.amount == Decimal("120000")
    assert await count(store, OutboxItem) == events_before + 1
    reopened = await sync.upsert("opportunities", [("BIG", changed.model_copy(update={"status": "open"}))])
    assert reopened[0].status == "updated"
    async with store.session() as s:
        assert (await s.execute(select(TimelineEntry.kind).order_by(TimelineEntry.id.desc()).limit(1))).scalar() == "reopened"


async def test_older_source_updates_are_ignored(store: Store, org: Org) -> None:
    sync = Sync(store, Who("api", "test"))
    await sync.upsert("opportunities", [("BIG", deal(stage="Negotiation", source_updated_at=T0))])
    late = await sync.upsert("opportunities", [("BIG", deal(stage="Proposal", source_updated_at=T0 - timedelta(hours=1)))])
    assert late[0].status == "stale"
    async with store.session() as s:
        assert (await s.execute(select(Opportunity.stage))).scalar() == "Negotiation"
        assert (await s.execute(select(func.count()).select_from(OpportunityHistory))).scalar_one() == 0


async def test_unknown_references_name_the_field(store: Store, org: Org) -> None:
    sync = Sync(store, Who("api", "test"))
    results = await sync.upsert("opportunities", [
        ("X1", deal(account_external_id="A-nope")), ("X2", deal(owner_email="ghost@org.test")),
        ("X3", deal(team_emails=["ghost@org.test"])), ("X4", deal()),
    ])
    assert [(r.status, r.error and r.error["field"]) for r in results] == [
        ("error", "account_external_id"), ("error", "owner_email"), ("error", "team_emails"), ("created", None)]


async def test_users_may_reference_managers_in_the_same_bulk(store: Store) -> None:
    sync = Sync(store, Who("api", "test"))
    results = await sync.upsert("users", [
        ("rep@x.test", UserRecord(name="Rep", manager_email="boss@x.test")),
        ("boss@x.test", UserRecord(name="Boss", role="manager")),
    ])
    assert [r.status for r in results] == ["created", "created"]
    async with store.session() as s:
        rep = (await s.execute(select(User).where(User.email == "rep@x.test"))).scalar_one()
        boss = (await s.execute(select(User).where(User.email == "boss@x.test"))).scalar_one()
    assert rep.manager_id == boss.id


async def test_a_constraint_breaking_item_fails_alone(store: Store) -> None:
    sync = Sync(store, Who("api", "test"))
    results = await sync.upsert("users", [
        ("one@x.test", UserRecord(name="One", slack_user_id="U1")),
        ("two@x.test", UserRecord(name="Two", slack_user_id="U1")),
        ("three@x.test", UserRecord(name="Three")),
    ])
    assert [r.status for r in results] == ["created", "error", "created"]
    assert results[1].error == {"field": "", "message": "slack_user_id is already used by another record"}


async def test_possible_duplicate_accounts_and_contacts_are_flagged(store: Store, org: Org) -> None:
    sync = Sync(store, Who("api", "test"))
    results = await sync.upsert("accounts", [
        ("N1", AccountRecord(name="Acme GmbH")),                       # suffix variant of ACME Corporation, Inc.
        ("N2", AccountRecord(name="SOCIETE GENERALE DES EAUX")),       # case and accents
        ("N3", AccountRecord(name="Fresh Name", domain="globex.example")),  # same domain as Globex
        ("N4", AccountRecord(name="Totally Unrelated Widgets")),
    ])
    flagged = {r.key: {d["external_id"] for d in r.duplicates} for r in results}
    assert flagged == {"N1": {"A-acme"}, "N2": {"A-societe"}, "N3": {"A-globex"}, "N4": set()}
    contacts = await sync.upsert("contacts", [
        ("C-new", ContactRecord(name="W. Coyote", email="COYOTE@acme.example", account_external_id="A-acme"))])
    assert [d["external_id"] for d in contacts[0].duplicates] == ["C-coyote"]


async def test_writes_are_audited_and_chunked(store: Store, org: Org) -> None:
    sync = Sync(store, Who("cli", "ops@org.test"))
    items = [(f"BULK{i}", deal(name=f"Deal {i}")) for i in range(CHUNK + 5)]
    results = await sync.upsert("opportunities", items)
    assert {r.status for r in results} == {"created"} and len(results) == CHUNK + 5
    async with store.session() as s:
        audits = list((await s.execute(select(AuditLog).order_by(AuditLog.id))).scalars())
    assert [len(a.details["created"]) for a in audits] == [CHUNK, 5]
    assert {(a.via, a.actor, a.action) for a in audits} == {("cli", "ops@org.test", "opportunity.upsert")}


async def test_repeated_key_in_one_request_keeps_the_last_version(store: Store, org: Org) -> None:
    sync = Sync(store, Who("api", "test"))
    await sync.upsert("opportunities", [("DUP", deal(stage="Proposal")), ("DUP", deal(stage="Commit"))])
    async with store.session() as s:
        assert (await s.execute(select(Opportunity.stage).where(Opportunity.external_id == "DUP"))).scalar() == "Commit"


async def test_changes_are_announced_after_commit_and_kept_in_the_outbox(store: Store, org: Org) -> None:
    seen: list[tuple[int, list[str], int]] = []

    async def listener(event) -> None:  # type: ignore[no-untyped-def]
        async with store.session() as s:  # committed: a new session can read the change already
            stage = (await s.execute(select(Opportunity.stage).where(Opportunity.id == event.opportunity_id))).scalar()
            outbox = (await s.execute(select(func.count()).where(OutboxItem.id == event.outbox_id))).scalar_one()
        seen.append((event.opportunity_id, [c["field"] for c in event.changes], outbox))
        assert stage is not None

    store.changes.subscribe(listener)
    sync = Sync(store, Who("api", "test"))
    await sync.upsert("opportunities", [("EV", deal())])
    assert await store.outbox.run_once() == 1
    await sync.upsert("opportunities", [("EV", deal())])  # unchanged: no event
    await sync.upsert("opportunities", [("EV", deal(stage="Commit"))])
    assert await store.outbox.run_once() == 1
    assert await store.outbox.run_once() == 0  # delivered once
    assert [fields for _, fields, _ in seen] == [["created"], ["stage"]]
    assert all(in_outbox == 1 for _, _, in_outbox in seen)
    assert len({opp for opp, _, _ in seen}) == 1


async def test_a_failing_listener_does_not_undo_or_block_the_write(store: Store, org: Org) -> None:
    async def broken(event) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("deal rooms are down")

    store.changes.subscribe(broken)
    results = await Sync(store, Who("api", "test")).upsert("opportunities", [("EV2", deal())])
    assert results[0].status == "created"
    assert await store.outbox.run_once() == 1
    async with store.session() as s:
        [row] = (await s.execute(select(OutboxItem).where(OutboxItem.operation == "opportunity.changed"))).scalars()
    assert (row.status, row.attempts, row.locked_by) == ("pending", 1, None)  # kept, to be retried later
    assert "1 of 1 change listeners failed" in (row.last_error or "")


async def test_a_manager_failing_in_the_same_bulk_fails_their_reports_too(store: Store) -> None:
    results = await Sync(store, Who("api", "test")).upsert("users", [
        ("a@x.test", UserRecord(name="A", manager_email="b@x.test")),
        ("b@x.test", UserRecord(name="B", manager_email="nobody@x.test")),
        ("c@x.test", UserRecord(name="C")),
    ])
    assert [(r.key, r.status) for r in results] == [("a@x.test", "error"), ("b@x.test", "error"), ("c@x.test", "created")]
    assert results[0].error == {"field": "manager_email", "message": "the manager b@x.test could not be saved"}


async def test_records_sent_with_a_merged_away_account_stay_on_the_kept_one(store: Store, org: Org) -> None:
    from crm_store.admin_ops import merge_accounts

    sync = Sync(store, Who("api", "test"))
    await sync.upsert("opportunities", [("M1", deal(account_external_id="A-initech"))])
    await merge_accounts(store, "A-globex", "A-initech", Who("cli", "ops"))
    again = await sync.upsert("opportunities", [("M1", deal(account_external_id="A-initech")),
                                                ("M2", deal(account_external_id="A-initech"))])
    assert [r.status for r in again] == ["unchanged", "created"]
    async with store.session() as s:
        accounts = set((await s.execute(select(Opportunity.account_id).where(Opportunity.external_id.in_(["M1", "M2"])))).scalars())
    assert accounts == {org.accounts["globex"]}


async def test_timeline_pages_follow_time_order_even_when_ids_do_not(store: Store, org: Org) -> None:
    from crm_store.deals import recent_entries

    deal_id = org.deals["acme_renewal"]
    async with store.transaction() as s:
        for i, days_ago in enumerate([1, 5, 2, 4, 3]):  # inserted out of time order
            s.add(TimelineEntry(opportunity_id=deal_id, kind="note", text=f"n{days_ago}",
                                occurred_at=T0 - timedelta(days=days_ago)))
    admin = await store.actor_for(email=Org.email("admin"))
    seen, before = [], None
    while True:
        page = await recent_entries(store, admin, deal_id, limit=2, before_id=before)
        seen += [e.text for e in page]
        if len(page) < 2:
            break
        before = page[-1].id
    assert seen == ["n1", "n2", "n3", "n4", "n5"]


def test_records_refuse_nul_characters() -> None:
    import pytest
    from pydantic import ValidationError

    for bad in ({"name": "Acme\x00 Corp"}, {"name": "Acme", "industry": "\x00"}, {"name": "A", "domain": "a\x00.com"}):
        with pytest.raises(ValidationError):
            AccountRecord.model_validate(bad)


async def test_the_same_change_from_two_replicas_at_once_is_recorded_once(store: Store, db_url: str, org: Org) -> None:
    """Two stores (as two replicas have) apply one change concurrently: the second writer waits for
    the first and sees nothing left to change."""
    await Sync(store, Who("api", "test")).upsert("opportunities", [("BIG", deal())])
    other = await Store.open(db_url, upgrade=False)
    try:
        change = deal(amount="150000", stage="Negotiation")
        results = await asyncio.gather(*(Sync(s, Who("api", "test")).upsert("opportunities", [("BIG", change)])
                                         for s in (store, other, store, other)))
    finally:
        await other.close()
    assert sorted(r[0].status for r in results) == ["unchanged", "unchanged", "unchanged", "updated"]
    async with store.session() as s:
        kinds = sorted(e.kind for e in (await s.execute(select(TimelineEntry))).scalars())
    assert kinds == ["amount_change", "stage_change"] and await count(store, OpportunityHistory) == 2

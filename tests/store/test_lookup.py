"""Fuzzy lookup through the store: typos, partial words, word order, suffix noise, ranking."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest

from crm_store import Actor, Store
from sqlalchemy import delete

from crm_store.models import Account, Contact, Opportunity
from crm_store import name_sync
from tests.org import Org


async def admin(store: Store) -> Actor:
    return await store.actor_for(email=Org.email("admin"))


@pytest.mark.parametrize("query", [
    "acme corp",            # suffix noise
    "ACME Corporation",     # case and suffix
    "acme corporation inc",
    "amce",                 # transposition
    "acmee corp",           # doubled letter
    "acm",                  # partial word
    "corporation acme",     # word order (the suffix is dropped, ACME remains)
])
async def test_accounts_found_despite_typos_and_noise(store: Store, org: Org, query: str) -> None:
    found = await store.find_accounts(await admin(store), query)
    assert found and found[0].row.name == "ACME Corporation, Inc."


async def test_accents_and_partial_words(store: Store, org: Org) -> None:
    me = await admin(store)
    assert (await store.find_accounts(me, "societe generale"))[0].row.name == "Société Générale des Eaux"
    assert (await store.find_accounts(me, "generale des eau"))[0].row.name == "Société Générale des Eaux"


async def test_deals_found_by_account_words_and_order(store: Store, org: Org) -> None:
    me = await admin(store)
    assert (await store.find_opportunities(me, "renewal acme"))[0].row.name == "ACME Renewal 2027"
    assert (await store.find_opportunities(me, "globex expnsion"))[0].row.name == "Globex Expansion"


async def test_contacts_found_by_person_name(store: Store, org: Org) -> None:
    me = await admin(store)
    assert (await store.find_contacts(me, "hank scorpoi"))[0].row.name == "Hank Scorpio"


async def test_exact_and_prefix_matches_rank_before_fuzzy_ones(store: Store, org: Org) -> None:
    async with store.transaction() as s:
        s.add_all([Account(external_id="x1", name="Acme"), Account(external_id="x2", name="Acne Studios"),
                   Account(external_id="x3", name="Acmeville Bakery")])
    found = await store.find_accounts(await admin(store), "acme")
    names = [f.row.name for f in found]
    # "ACME Corporation, Inc." normalises to "acme" as well: both are exact.
    assert set(names[:2]) == {"Acme", "ACME Corporation, Inc."}
    assert names.index("Acmeville Bakery") < names.index("Acne Studios")


async def test_equal_normalised_names_prefer_the_closer_raw_name(store: Store, org: Org) -> None:
    async with store.transaction() as s:
        s.add(Account(external_id="acme-sa", name="Acme S.A."))
    me = await admin(store)
    assert (await store.find_accounts(me, "acme corp"))[0].row.name == "ACME Corporation, Inc."
    assert (await store.find_accounts(me, "acme sa"))[0].row.name == "Acme S.A."


async def test_ties_broken_by_amount(store: Store, org: Org) -> None:
    async with store.transaction() as s:
        for i, amount in enumerate(["1000", "900000", "5000"]):
            s.add(Opportunity(external_id=f"tie{i}", name="Twin Deal", account_id=org.accounts["globex"],
                              owner_id=org.users["rep_c"], amount=Decimal(amount), currency="USD", stage="Proposal"))
    found = await store.find_opportunities(await admin(store), "twin deal")
    assert [f.row.amount for f in found[:3]] == [Decimal("900000"), Decimal("5000"), Decimal("1000")]


async def test_writes_by_another_replica_are_found_after_refresh(
    store: Store, org: Org, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = await admin(store)
    assert not [f for f in await store.find_accounts(me, "zyxwin holdings") if f.match.score > 90]
    other = await Store.open(db_url, upgrade=False)  # a second replica on the same database
    try:
        async with other.transaction() as s:
            s.add(Account(external_id="new1", name="Zyxwin Holdings"))
    finally:
        await other.close()
    monkeypatch.setattr(name_sync, "REFRESH_SECONDS", 0.0)
    # Lookups never wait for the refresh: the new row shows up once the background one is done.
    for _ in range(100):
        found = await store.find_accounts(me, "zyxwin holdings")
        if found and found[0].row.name == "Zyxwin Holdings":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("a row written by another replica was never found")


async def test_periodic_rebuild_drops_rows_deleted_elsewhere(
    store: Store, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = await admin(store)
    await store.find_contacts(me, "gibbons")
    assert len(await store.names.get("contact")) == 3
    async with store.engine.begin() as conn:  # a hard delete that no updated_at can announce
        await conn.execute(delete(Contact).where(Contact.id == org.contacts["gibbons"]))
    monkeypatch.setattr(name_sync, "REBUILD_SECONDS", 0.0)
    await store.names.get("contact")  # starts the rebuild in the background
    for _ in range(100):
        if len(await store.names.get("contact")) == 2:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the rebuild never dropped the deleted contact")
    assert [f.row.name for f in await store.find_contacts(me, "peter gibbons") if f.match.score > 90] == []


async def test_renamed_and_merged_rows_follow_the_database(store: Store, org: Org) -> None:
    me = await admin(store)
    await store.find_accounts(me, "globex")  # load the index
    async with store.transaction() as s:
        acct = await s.get(Account, org.accounts["globex"])
        assert acct is not None
        acct.name = "Globex Worldwide"
        umbrella = await s.get(Account, org.accounts["umbrella"])
        assert umbrella is not None
        umbrella.merged_into_id = org.accounts["acme"]
        umbrella.updated_at = umbrella.updated_at + timedelta(microseconds=1)
    assert (await store.find_accounts(me, "globex worldwide"))[0].row.name == "Globex Worldwide"
    assert all(f.row.name != "Umbrella Pharma AG" for f in await store.find_accounts(me, "umbrella pharma"))

"""Full-text search over timeline entries and transcripts: one function, the same contract on
SQLite (FTS5) and PostgreSQL (tsvector). Rows are written straight through the models, as any
writer (sync, capture, erasure, retention) does: the index must follow by itself."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, select, text, update

from crm_store import Actor, Store
from crm_store import search as search_module
from crm_store.engine import create_engine, insert_unless_present
from crm_store.migrate import alembic_config
from crm_store.models import DealRoom, DealTeamMember, Opportunity, TimelineEntry, TranscriptMessage, User
from crm_store.search import Hit, search, terms
from tests.org import DEALS, Org, build_org

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
_refs = itertools.count(1)


async def room(store: Store, org: Org, deal: str) -> int:
    async with store.transaction() as s:
        found = (await s.execute(select(DealRoom.id).where(DealRoom.opportunity_id == org.deals[deal]))).scalar()
        if found is not None:
            return found
        r = DealRoom(opportunity_id=org.deals[deal], platform="slack", channel_id=f"C-{deal}",
                     channel_name=f"deal-{deal}", status="active")
        s.add(r)
        await s.flush()
        return r.id


async def message(store: Store, org: Org, deal: str, text_: str | None, *, who: str = "rep_a",
                  at: datetime | None = None, permalink: str | None = "auto") -> int:
    room_id = await room(store, org, deal)
    ref = f"{1700000000 + next(_refs)}.000100"
    async with store.transaction() as s:
        m = TranscriptMessage(
            deal_room_id=room_id, opportunity_id=org.deals[deal], platform="slack", channel_id=f"C-{deal}",
            message_ref=ref, author_id=org.users[who], text=text_, posted_at=at or T0,
            permalink=f"https://example.slack.com/archives/C-{deal}/p{ref.replace('.', '')}"
            if permalink == "auto" else permalink)
        s.add(m)
        await s.flush()
        return m.id


async def entry(store: Store, org: Org, deal: str, text_: str, *, kind: str = "decision", who: str = "rep_a",
                at: datetime | None = None, permalink: str | None = None) -> int:
    async with store.transaction() as s:
        e = TimelineEntry(opportunity_id=org.deals[deal], kind=kind, text=text_, author_id=org.users[who],
                          occurred_at=at or T0, permalink=permalink)
        s.add(e)
        await s.flush()
        return e.id


async def actor(store: Store, who: str) -> Actor:
    return await store.actor_for(email=Org.email(who))


async def find(store: Store, who: str, words: str, *, limit: int = 10) -> list[Hit]:
    return await search(store, await actor(store, who), words, limit=limit)


async def assert_index_consistent(store: Store) -> None:
    """SQLite: each FTS index holds exactly what its content view shows (PostgreSQL's generated
    column cannot drift)."""
    if store.dialect != "sqlite":
        return
    async with store.transaction() as s:
        for fts in ("transcript_messages_fts", "timeline_entries_fts"):
            await s.execute(text(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)"))


# -- what is found --------------------------------------------------------------------------------

async def test_finds_entries_and_messages_with_what_a_hit_shows(store: Store, org: Org) -> None:
    m = await message(store, org, "acme_renewal", "Can we get the security review done before Friday?",
                      who="se", at=T0)
    e = await entry(store, org, "acme_renewal", "Security review passed, legal next", kind="decision",
                    at=T0 + timedelta(hours=1), permalink="https://example.slack.com/archives/C1/p1")
    await entry(store, org, "acme_renewal", "Sent the revised quote", kind="note")
    hits = await find(store, "rep_a", "security review")
    assert {(h.source, h.id) for h in hits} == {("message", m), ("entry", e)}
    by_source = {h.source: h for h in hits}
    decision, said = by_source["entry"], by_source["message"]
    assert decision.kind == "decision" and said.kind == "message"
    assert decision.opportunity_id == said.opportunity_id == org.deals["acme_renewal"]
    assert decision.opportunity == said.opportunity == "ACME Renewal 2027"
    assert decision.author == "Rita Rep" and said.author == "Sam Engineer"
    assert decision.at == T0 + timedelta(hours=1) and said.at == T0
    assert decision.permalink == "https://example.slack.com/archives/C1/p1"
    assert said.permalink is not None and said.permalink.startswith("https://example.slack.com/archives/C-acme_renewal/")
    assert "*Security*" in decision.snippet and "*review*" in decision.snippet
    assert "*security*" in said.snippet and "Friday" in said.snippet
    await assert_index_consistent(store)


async def test_a_word_matches_its_other_forms_and_a_prefix(store: Store, org: Org) -> None:
    m = await message(store, org, "acme_renewal", "They asked about pricing for the EU regions")
    for words in ("pricing", "price", "prices", "pric", "PRICING!"):
        assert [h.id for h in await find(store, "rep_a", words)] == [m], words


async def test_accented_words(store: Store, org: Org) -> None:
    m = await message(store, org, "societe_eaux", "Société Générale signed the résumé of terms")
    assert [h.id for h in await find(store, "rep_a", "Générale")] == [m]
    if store.dialect == "sqlite":  # FTS5 folds accents; PostgreSQL's english configuration keeps them
        assert [h.id for h in await find(store, "rep_a", "generale societe")] == [m]


async def test_the_indexed_deal_and_owner_ids_are_not_words_to_find(store: Store, org: Org) -> None:
    await message(store, org, "acme_renewal", "nothing with numbers here")
    deal, owner = org.deals["acme_renewal"], org.users["rep_a"]
    assert await find(store, "admin", str(deal)) == [] and await find(store, "admin", str(owner)) == []


# -- ranking --------------------------------------------------------------------------------------

async def test_a_decision_ranks_above_chatter_with_the_same_words(store: Store, org: Org) -> None:
    said = await message(store, org, "acme_renewal", "three year term agreed with procurement",
                         at=T0 + timedelta(days=1))  # newer, so recency alone would put it first
    decided = await entry(store, org, "acme_renewal", "three year term agreed with procurement", kind="decision")
    noted = await entry(store, org, "acme_renewal", "three year term agreed with procurement", kind="note",
                        at=T0 - timedelta(days=1))
    hits = await find(store, "rep_a", "term agreed")
    assert [(h.source, h.id) for h in hits] == [("entry", decided), ("entry", noted), ("message", said)]


async def test_more_matching_words_rank_first(store: Store, org: Org) -> None:
    both = await message(store, org, "acme_renewal", "the security review is booked", at=T0)
    # Newer, a decision, and "security" twice: it still only has one of the two words.
    one = await entry(store, org, "acme_renewal", "security questionnaire: security team replied",
                      at=T0 + timedelta(days=3))
    hits = await find(store, "rep_a", "security review")
    assert [(h.source, h.id) for h in hits] == [("message", both), ("entry", one)]


async def test_limit_and_a_very_common_query_ranks_its_newest_matches(
        store: Store, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [await message(store, org, "acme_renewal", f"status call number {i} about onboarding",
                         at=T0 + timedelta(minutes=i)) for i in range(12)]
    assert len(await find(store, "rep_a", "onboarding", limit=5)) == 5
    assert len(await find(store, "rep_a", "onboarding", limit=50)) == 12
    monkeypatch.setattr(search_module, "CANDIDATES", {2: 4, 1: 4})
    assert {h.id for h in await find(store, "rep_a", "onboarding", limit=10)} == set(ids[-4:])


async def test_snippets_are_short_and_mark_the_words(store: Store, org: Org) -> None:
    filler = " ".join(f"word{i}" for i in range(60))
    await message(store, org, "acme_renewal", f"{filler} the\nredlined   MSA came back {filler}")
    (hit,) = await find(store, "rep_a", "redlined msa")
    assert "*redlined* *MSA*" in hit.snippet and "\n" not in hit.snippet and "  " not in hit.snippet
    assert len(hit.snippet) < 200


# -- visibility -----------------------------------------------------------------------------------

EVERYWHERE = "renewal budget approved by the steering committee"
SEES = {
    "rep_a": {"acme_renewal", "umbrella_platform", "societe_eaux"},
    "rep_b": {"acme_pilot"},
    "se": {"acme_renewal"},  # on its deal team
    "rep_c": {"globex_expansion"},
    "mgr1": {"acme_renewal", "acme_pilot", "umbrella_platform", "societe_eaux"},
    "mgr2": {"globex_expansion"},  # Sam is on Rita's deal team, which shows his manager nothing
    "vp": set(DEALS) - {"initech_secret"},
    "loner": {"initech_secret"},
    "admin": set(DEALS),
}


@pytest.mark.parametrize("in_index", [True, False], ids=["narrowed in the index", "SQL only"])
@pytest.mark.parametrize("who", list(SEES))
async def test_a_person_finds_only_text_of_deals_they_may_see(
        store: Store, org: Org, who: str, in_index: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not in_index:
        monkeypatch.setattr(search_module, "PREFILTER_MAX_MANAGERS", -1)
    for deal in DEALS:
        await message(store, org, deal, f"{EVERYWHERE} ({deal})")
        await entry(store, org, deal, f"{EVERYWHERE} ({deal})")
    hits = await find(store, who, "budget steering committee", limit=50)
    names = {org.deal_name(d) for d in SEES[who]}
    assert {h.opportunity for h in hits} == names
    assert len(hits) == 2 * len(SEES[who])


async def test_an_unmapped_person_finds_nothing(store: Store, org: Org) -> None:
    await message(store, org, "acme_renewal", EVERYWHERE)
    assert await search(store, Actor.unmapped(), "budget") == []


async def test_one_deal_only(store: Store, org: Org) -> None:
    mine = await message(store, org, "acme_renewal", EVERYWHERE)
    await message(store, org, "societe_eaux", EVERYWHERE)
    hidden = await message(store, org, "acme_pilot", EVERYWHERE)
    rita = await actor(store, "rep_a")
    assert [h.id for h in await search(store, rita, "budget", opportunity_id=org.deals["acme_renewal"])] == [mine]
    assert await search(store, rita, "budget", opportunity_id=org.deals["acme_pilot"]) == []
    ben = await actor(store, "rep_b")
    assert [h.id for h in await search(store, ben, "budget", opportunity_id=org.deals["acme_pilot"])] == [hidden]


async def test_a_new_owner_and_a_new_team_member_find_the_deals_text(store: Store, org: Org) -> None:
    m = await message(store, org, "acme_pilot", "pilot success criteria signed off")
    e = await entry(store, org, "acme_pilot", "pilot success criteria agreed")
    assert await find(store, "rep_a", "criteria") == []
    async with store.transaction() as s:
        await s.execute(update(Opportunity).where(Opportunity.id == org.deals["acme_pilot"])
                        .values(owner_id=org.users["rep_a"]))
    assert {h.id for h in await find(store, "rep_a", "criteria")} == {m, e}
    assert await find(store, "rep_b", "criteria") == []
    assert await find(store, "rep_c", "criteria") == []
    async with store.transaction() as s:
        s.add(DealTeamMember(opportunity_id=org.deals["acme_pilot"], user_id=org.users["rep_c"]))
    assert {h.id for h in await find(store, "rep_c", "criteria")} == {m, e}
    async with store.transaction() as s:
        await s.execute(delete(DealTeamMember).where(DealTeamMember.user_id == org.users["rep_c"]))
    assert await find(store, "rep_c", "criteria") == []
    await assert_index_consistent(store)


async def test_every_deal_team_change_keeps_the_index_right(store: Store, org: Org) -> None:
    pilot, globex = org.deals["acme_pilot"], org.deals["globex_expansion"]
    m = await message(store, org, "acme_pilot", "pilot success criteria signed off")
    g = await entry(store, org, "globex_expansion", "expansion success criteria agreed")

    async def sees(who: str) -> set[int]:
        return {h.opportunity_id for h in await find(store, who, "criteria")}

    async with store.transaction() as s:  # joined, also by an insert that may find the row there
        s.add(DealTeamMember(opportunity_id=pilot, user_id=org.users["rep_c"]))
    async with store.transaction() as s:
        await s.execute(insert_unless_present(s, DealTeamMember, [
            {"opportunity_id": pilot, "user_id": org.users["rep_c"]},
            {"opportunity_id": pilot, "user_id": org.users["loner"]}]))
    assert await sees("rep_c") == {pilot, globex} and await sees("loner") == {pilot}
    await assert_index_consistent(store)
    async with store.transaction() as s:  # someone else takes Cara's place on the team
        await s.execute(update(DealTeamMember).where(DealTeamMember.user_id == org.users["rep_c"])
                        .values(user_id=org.users["rep_a"]))
    assert await sees("rep_c") == {globex} and await sees("rep_a") == {pilot}
    await assert_index_consistent(store)
    async with store.transaction() as s:  # Lou's membership moves to another deal
        await s.execute(update(DealTeamMember).where(DealTeamMember.user_id == org.users["loner"])
                        .values(opportunity_id=globex))
    assert await sees("loner") == {globex}
    await assert_index_consistent(store)
    async with store.transaction() as s:
        await s.execute(delete(DealTeamMember).where(DealTeamMember.opportunity_id.in_([pilot, globex])))
    assert await sees("rep_a") == set() and await sees("loner") == set()
    assert [h.id for h in await find(store, "rep_b", "criteria")] == [m]
    assert [h.id for h in await find(store, "rep_c", "criteria")] == [g]
    await assert_index_consistent(store)


async def test_a_new_manager_finds_the_text_of_their_new_reports_deals(store: Store, org: Org) -> None:
    m = await message(store, org, "acme_pilot", "pilot success criteria signed off")
    assert [h.id for h in await find(store, "mgr1", "criteria")] == [m]
    assert await find(store, "mgr2", "criteria") == []
    async with store.transaction() as s:  # Ben moves from Mona's team to Max's
        await s.execute(update(User).where(User.id == org.users["rep_b"]).values(manager_id=org.users["mgr2"]))
    assert await find(store, "mgr1", "criteria") == []
    assert [h.id for h in await find(store, "mgr2", "criteria")] == [m]
    assert [h.id for h in await find(store, "vp", "criteria")] == [m]
    async with store.transaction() as s:  # and then reports to nobody
        await s.execute(update(User).where(User.id == org.users["rep_b"]).values(manager_id=None))
    assert await find(store, "mgr2", "criteria") == [] and await find(store, "vp", "criteria") == []
    assert [h.id for h in await find(store, "rep_b", "criteria")] == [m]
    await assert_index_consistent(store)


# -- what leaves the search -----------------------------------------------------------------------

async def test_an_edit_is_found_by_its_new_words_not_its_old_ones(store: Store, org: Org) -> None:
    m = await message(store, org, "acme_renewal", "budget approved by finance")
    assert [h.id for h in await find(store, "rep_a", "approved")] == [m]
    async with store.transaction() as s:
        await s.execute(update(TranscriptMessage).where(TranscriptMessage.id == m).values(
            text="budget rejected by finance", previous_versions=[{"text": "budget approved by finance"}],
            edited_at=T0 + timedelta(minutes=5)))
    assert await find(store, "rep_a", "approved") == []
    assert [h.id for h in await find(store, "rep_a", "rejected")] == [m]
    e = await entry(store, org, "acme_renewal", "kickoff moved to March")
    async with store.transaction() as s:
        await s.execute(update(TimelineEntry).where(TimelineEntry.id == e).values(text="kickoff moved to April"))
    assert await find(store, "rep_a", "march") == []
    assert [h.id for h in await find(store, "rep_a", "april")] == [e]
    await assert_index_consistent(store)


@pytest.mark.parametrize("gone", [
    {"text": None, "deleted_at": T0},  # deleted in the channel (capture drops the text)
    {"deleted_at": T0},  # deleted, text still kept by some writer
    {"text": None, "purged_at": T0},  # retention or erasure
    {"purged_at": T0},
], ids=["deleted", "deleted, text kept", "purged", "purged, text kept"])
async def test_deleted_and_purged_messages_are_not_found(store: Store, org: Org, gone: dict[str, object]) -> None:
    m = await message(store, org, "acme_renewal", "the procurement portal is down again")
    kept = await message(store, org, "acme_renewal", "procurement wants the W-9")
    async with store.transaction() as s:
        await s.execute(update(TranscriptMessage).where(TranscriptMessage.id == m).values(**gone))
    assert [h.id for h in await find(store, "admin", "procurement")] == [kept]
    assert await find(store, "admin", "portal") == []
    await assert_index_consistent(store)


async def test_a_retracted_entry_is_not_found_until_it_stands_again(store: Store, org: Org) -> None:
    e = await entry(store, org, "acme_renewal", "we go with the 3-year term", kind="decision")
    async with store.transaction() as s:
        await s.execute(update(TimelineEntry).where(TimelineEntry.id == e).values(retracted_at=T0))
    assert await find(store, "rep_a", "3-year term") == []
    async with store.transaction() as s:
        await s.execute(update(TimelineEntry).where(TimelineEntry.id == e).values(retracted_at=None))
    assert [h.id for h in await find(store, "rep_a", "3-year term")] == [e]


async def test_rows_deleted_with_their_deal_leave_the_index(store: Store, org: Org) -> None:
    await message(store, org, "acme_pilot", "pilot budget is tight")
    await entry(store, org, "acme_pilot", "pilot budget approved")
    kept = await message(store, org, "acme_renewal", "renewal budget is fine")
    async with store.transaction() as s:
        await s.execute(delete(Opportunity).where(Opportunity.id == org.deals["acme_pilot"]))
    assert [h.id for h in await find(store, "admin", "budget")] == [kept]
    await assert_index_consistent(store)


# -- what people type -----------------------------------------------------------------------------

HOSTILE = ['"', '""', '"security', "*", "security*", "NEAR(", "NEAR(security review, 2)", "-", "-security",
           "security -review", "OR", "security OR", "AND NOT", "NOT security", "(", ")", "((security", ":",
           "text:security", "owner : 1", "deal:1", "{text}: x", "^security", "'", "'; DROP TABLE users; --",
           "\\", "%", "_", "a & b | !c", "security:*", "<->", "\x00", "🎉", "🎉 security 🎉", "x" * 1000,
           "security " * 200, "ÅÄÖ ß ǅ ﬁ", "中文 テスト", "\u202esecurity", "   ", ".", "!!!"]


@pytest.mark.parametrize("words", HOSTILE, ids=range(len(HOSTILE)))
async def test_whatever_people_type_is_searched_for_plainly(store: Store, org: Org, words: str) -> None:
    m = await message(store, org, "acme_renewal", "security review notes: NEAR the end, OR sooner")
    hits = await find(store, "rep_a", words)
    assert all(h.id == m for h in hits)
    if "security" in words:
        assert [h.id for h in hits] == [m]


def test_the_words_searched_for() -> None:
    assert terms("The Security-Review OR the *pricing*!") == ["security", "review", "pricing"]
    assert terms("the and of") == []
    assert terms("x" * 1000) == []
    assert len(terms(" ".join(f"w{i}" for i in range(50)))) == search_module.MAX_TERMS
    assert terms("Société  GÉNÉRALE") == ["société", "générale"]


# -- the migration --------------------------------------------------------------------------------

def _migrate(connection: Any, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    current = MigrationContext.configure(connection).get_current_revision()
    if revision != "head" and current is not None and current > revision:  # revisions are numbered
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)


async def _search_objects(conn: Any) -> list[str]:
    return list((await conn.execute(text(
        "SELECT name FROM sqlite_master WHERE name GLOB '*_fts*' OR name GLOB '*_search*'"))).scalars())


async def test_the_sqlite_migration_indexes_what_is_there_and_goes_back(tmp_path: Path) -> None:
    """On its own SQLite file in both legs: PostgreSQL computes its generated column for existing
    rows by itself, so only SQLite's rebuild and downgrade need this."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'before.db'}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, "0003")
    await engine.dispose()
    before = await Store.open(url, upgrade=False)
    org = await build_org(before)
    m = await message(before, org, "acme_renewal", "pricing sheet sent before search existed")
    e = await entry(before, org, "acme_pilot", "pricing approved before search existed")
    await before.close()

    after = await Store.open(url)  # migrates to head: the rows there are indexed
    try:
        assert {(h.source, h.id) for h in await find(after, "admin", "pricing")} == {("message", m), ("entry", e)}
        assert [h.id for h in await find(after, "rep_a", "pricing")] == [m]
        await assert_index_consistent(after)
        async with after.engine.begin() as conn:
            # per source a view, the FTS table and its 4 shadow tables, 3 triggers; 7 more triggers
            assert len(await _search_objects(conn)) == 2 * (1 + 5 + 3) + 7
            await conn.run_sync(_migrate, "0003")
            assert await _search_objects(conn) == []
            await conn.run_sync(_migrate, "head")
        assert len(await find(after, "admin", "pricing")) == 2
    finally:
        await after.close()

"""`dealbot duplicates`, `dealbot merge` and `dealbot export timeline`, on a real database.

The commands run in-process through typer's runner (in a worker thread, as each one runs its
own event loop) and, for the export, once as a real process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from bot.api import CSV_COLUMNS
from bot.cli import app
from bot.csv_import import import_csv
from crm_store import Store
from crm_store.admin_ops import duplicate_accounts
from crm_store.deals import add_entry
from crm_store.models import Account, AuditLog, Contact, Opportunity, TimelineEntry, utcnow
from crm_store.records import AccountRecord, ContactRecord, OpportunityRecord
from crm_store.sync import Sync, Who
from tests.org import Org, snapshot
from tests.test_api import AUTH, V1, start_client
from tests.test_cli import run

FIXTURES = Path(__file__).parent / "fixtures" / "csv"


async def cli(db_url: str, *args: str) -> Result:
    env = {"DATABASE_URL": db_url, "USER": "ops-lead"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def import_dupes(store: Store, tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "accounts_dupes.csv", tmp_path)
    await import_csv(store, "accounts", tmp_path / "accounts_dupes.csv", Who("cli", "tester"))


async def timeline_ids(store: Store, opp_id: int) -> list[int]:
    async with store.session() as s:
        return list((await s.execute(select(TimelineEntry.id).where(TimelineEntry.opportunity_id == opp_id)
                                     .order_by(TimelineEntry.id))).scalars())


async def account_of(store: Store, model: type[Contact] | type[Opportunity], external_id: str) -> str:
    async with store.session() as s:
        return (await s.execute(select(Account.external_id).join(model, model.account_id == Account.id)
                                .where(model.external_id == external_id))).scalar_one()


# -- duplicates ---------------------------------------------------------------------------------------------


async def test_duplicates_lists_candidate_pairs_as_a_table(store: Store, org: Org, db_url: str, tmp_path: Path) -> None:
    clean = await cli(db_url, "duplicates")
    assert clean.exit_code == 0 and "No possible duplicate accounts at score 90 or more." in clean.stdout

    await import_dupes(store, tmp_path)
    result = await cli(db_url, "duplicates")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["score", "account", "name", "account", "name"]
    table = "\n".join(lines[1:])
    for keep, keep_name, other, other_name in [
        ("A-acme", "ACME Corporation, Inc.", "A-200", "Acme Inc."),
        ("A-globex", "Globex Corporation", "A-201", "GLOBEX corp"),
        ("A-societe", "Société Générale des Eaux", "A-202", "Societe Generale des Eaux S.A."),
    ]:
        [row] = [line for line in lines if f" {keep} " in line and f" {other} " in line]
        assert row.split()[0] == "100.0" and keep_name in row and row.endswith(other_name)
    for unrelated in ("A-203", "A-204", "A-initech", "A-umbrella"):
        assert unrelated not in table
    assert "3 possible duplicate pairs. Merge one with: dealbot merge KEEP_ID DROP_ID" in result.stdout
    pairs = await duplicate_accounts(store, 90)
    assert len(pairs) == 3  # the same as the store says

    out_of_range = await cli(db_url, "duplicates", "--min-score", "101")
    assert out_of_range.exit_code == 2


# -- merge ----------------------------------------------------------------------------------------------------


async def duplicate_with_deal(store: Store, org: Org) -> int:
    """Account A-200 "Acme Inc." with a contact and a deal that has a note and a stage change."""
    sync = Sync(store, Who("api", "crm"))
    await sync.upsert("accounts", [("A-200", AccountRecord(name="Acme Inc."))])
    await sync.upsert("contacts", [("C-200", ContactRecord(name="Road Runner", account_external_id="A-200"))])
    deal = OpportunityRecord(name="Acme Inc. Pilot", account_external_id="A-200", amount=Decimal(5000), currency="USD",
                             stage="Discovery", owner_email=org.email("rep_a"))
    await sync.upsert("opportunities", [("O-200", deal)])
    await sync.upsert("opportunities", [("O-200", deal.model_copy(update={"stage": "Proposal"}))])
    async with store.session() as s:
        opp_id = (await s.execute(select(Opportunity.id).where(Opportunity.external_id == "O-200"))).scalar_one()
    rita = await store.actor_for(email=org.email("rep_a"))
    await add_entry(store, rita, opp_id, "note", "They use the old Acme Inc. name on invoices", via="shell")
    return opp_id


async def test_merge_moves_contacts_and_opportunities_with_their_timelines(
    store: Store, org: Org, db_url: str
) -> None:
    opp_id = await duplicate_with_deal(store, org)
    entries = await timeline_ids(store, opp_id)
    assert len(entries) == 2  # the stage change and the note

    result = await cli(db_url, "merge", "A-acme", "A-200")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("Merged A-200 \u201cAcme Inc.\u201d into A-acme \u201cACME Corporation, Inc.\u201d: "
                                     "moved 1 contact and 1 opportunity.")
    assert await account_of(store, Contact, "C-200") == "A-acme"
    assert await account_of(store, Opportunity, "O-200") == "A-acme"
    assert await account_of(store, Opportunity, "O-acme_renewal") == "A-acme"  # the kept account's own deals stay
    assert await timeline_ids(store, opp_id) == entries  # the timeline went with the deal
    async with store.session() as s:
        dropped = (await s.execute(select(Account).where(Account.external_id == "A-200"))).scalar_one()
        [audit] = (await s.execute(select(AuditLog).where(AuditLog.action == "account.merge"))).scalars()
    assert dropped.merged_into_id == org.accounts["acme"]
    assert (audit.via, audit.actor, audit.entity_type, audit.entity_id) == ("cli", "ops-lead", "account", "A-acme")
    assert audit.details == {"dropped": "A-200", "contacts": 1, "opportunities": 1}

    listing = await cli(db_url, "duplicates")
    assert "A-200" not in listing.stdout  # a merged account is no candidate any more


@pytest.mark.parametrize(("args", "message"), [
    (["A-acme", "A-nope"], "Cannot merge: no account with external id 'A-nope'."),
    (["A-nope", "A-200"], "Cannot merge: no account with external id 'A-nope'."),
    (["A-acme", "A-acme"], "Cannot merge: cannot merge account A-acme into itself."),
    (["A-globex", "A-200"], "Cannot merge: account A-200 was already merged into A-acme."),
    (["A-200", "A-globex"], "Cannot merge: account A-200 was merged into A-acme; merge into A-acme instead."),
])
async def test_merge_refuses_unknown_same_and_merged_accounts(
    store: Store, org: Org, db_url: str, args: list[str], message: str
) -> None:
    await duplicate_with_deal(store, org)
    assert (await cli(db_url, "merge", "A-acme", "A-200")).exit_code == 0
    before = await snapshot(store)
    result = await cli(db_url, "merge", *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message and result.stdout == ""
    assert await snapshot(store) == before


# -- timeline export ------------------------------------------------------------------------------------------


async def busy_timeline(store: Store, org: Org) -> int:
    """The ACME renewal with notes that need quoting, one backdated (its id is newer than its time)."""
    rita = await store.actor_for(email=org.email("rep_a"))
    opp = org.deals["acme_renewal"]
    await add_entry(store, rita, opp, "note", 'CFO said: "no, not before Q3", then left', via="shell")
    await add_entry(store, rita, opp, "note", "Two lines:\nfirst; second — naïve café", via="shell")
    await add_entry(store, rita, opp, "note", "Backdated kickoff notes", via="shell", occurred_at=utcnow() - timedelta(days=30))
    return opp


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


async def api_csv(store: Store, external_id: str) -> str:
    client = await start_client(store)
    try:
        async with client.get(f"{V1}/opportunities/{external_id}/timeline?format=csv", headers=AUTH) as response:
            assert response.status == 200
            return await response.text()
    finally:
        await client.close()


async def test_export_timeline_writes_the_apis_csv_to_stdout_or_a_file(
    store: Store, org: Org, db_url: str, tmp_path: Path
) -> None:
    await busy_timeline(store, org)
    result = await cli(db_url, "export", "timeline", "--opportunity", "O-acme_renewal")
    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert rows[0] == CSV_COLUMNS
    assert [r[2] for r in rows[1:]] == ["note"] * 3
    texts = [r[4] for r in rows[1:]]
    assert texts == ["Two lines:\nfirst; second — naïve café", 'CFO said: "no, not before Q3", then left',
                     "Backdated kickoff notes"]  # newest first, the backdated one last
    assert {r[3] for r in rows[1:]} == {"Rita Rep"}
    assert rows == parse(await api_csv(store, "O-acme_renewal"))  # the very same rows as the API's CSV

    target = tmp_path / "timeline.csv"
    to_file = await cli(db_url, "export", "timeline", "--opportunity", "O-acme_renewal", "--output", str(target))
    assert to_file.exit_code == 0
    assert to_file.stdout.strip() == f"Wrote 3 timeline entries of O-acme_renewal to {target}."
    assert parse(target.read_text(encoding="utf-8")) == rows


async def test_export_is_admin_scope_and_refuses_unknown_opportunities(store: Store, org: Org, db_url: str) -> None:
    loner = await store.actor_for(email=org.email("loner"))
    await add_entry(store, loner, org.deals["initech_secret"], "note", "Only Lou and admins see this", via="shell")
    hidden = await cli(db_url, "export", "timeline", "--opportunity", "O-initech_secret")
    assert hidden.exit_code == 0 and "Only Lou and admins see this" in hidden.stdout
    empty = await cli(db_url, "export", "timeline", "--opportunity", "O-acme_pilot")
    assert parse(empty.stdout) == [CSV_COLUMNS]
    missing = await cli(db_url, "export", "timeline", "--opportunity", "O-nope")
    assert missing.exit_code == 2 and missing.stderr.strip() == "No opportunity with external id 'O-nope'."


async def test_export_command_as_a_real_process(store: Store, org: Org, db_url: str, tmp_path: Path) -> None:
    await busy_timeline(store, org)
    result = run(["export", "timeline", "--opportunity", "O-acme_renewal"], env={"DATABASE_URL": db_url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = parse(result.stdout)
    assert rows[0] == CSV_COLUMNS and len(rows) == 4
    assert rows[2][4] == 'CFO said: "no, not before Q3", then left'
    assert result.stderr == ""


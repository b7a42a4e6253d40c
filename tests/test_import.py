"""CSV import: documented, Salesforce and HubSpot headers, rejected rows, re-import, duplicates."""

from __future__ import annotations

import csv
import shutil
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from bot.csv_import import (
    COLUMNS,
    ImportReport,
    UnusableInput,
    import_csv,
    parse_amount,
    parse_date,
    parse_datetime,
    rejected_path_for,
)
from crm_store import Store
from crm_store.models import Account, AuditLog, Contact, Opportunity, OpportunityHistory, User
from crm_store.sync import Who
from tests.org import Org, snapshot
from tests.test_cli import run

FIXTURES = Path(__file__).parent / "fixtures" / "csv"
WHO = Who(via="cli", actor="tester")


def copy(tmp_path: Path, name: str) -> Path:
    """A fixture copied to the test's directory (the import writes FILE.rejected.csv next to it)."""
    target = tmp_path / name
    shutil.copy(FIXTURES / name, target)
    return target


async def load(store: Store, kind: str, path: Path, **options: object) -> ImportReport:
    return await import_csv(store, kind, path, WHO, **options)  # type: ignore[arg-type]


def counts(report: ImportReport) -> dict[str, int]:
    return {s: report.counts.get(s, 0) for s in ("created", "updated", "unchanged", "stale", "rejected")}


def problems(report: ImportReport) -> list[tuple[int, str, str]]:
    return [(r.line, column, reason) for r in report.rejected for column, reason in r.problems]


def rejected_rows(report: ImportReport) -> list[dict[str, str]]:
    assert report.rejected_path is not None
    with report.rejected_path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f, delimiter=","))


async def users_by_email(store: Store) -> dict[str, User]:
    async with store.session() as s:
        return {u.email: u for u in (await s.execute(select(User))).scalars()}


async def account(store: Store, external_id: str) -> Account:
    async with store.session() as s:
        return (await s.execute(select(Account).where(Account.external_id == external_id)
                                .options(selectinload(Account.owner)))).scalar_one()


async def opportunity(store: Store, external_id: str) -> Opportunity:
    async with store.session() as s:
        return (await s.execute(select(Opportunity).where(Opportunity.external_id == external_id).options(
            selectinload(Opportunity.owner), selectinload(Opportunity.account), selectinload(Opportunity.team)
        ))).scalar_one()


# -- each kind, documented headers ------------------------------------------------------------------


async def test_users_with_documented_columns_managers_first_and_by_name(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "users", copy(tmp_path, "users.csv"))
    assert counts(report) == {"created": 3, "updated": 0, "unchanged": 0, "stale": 0, "rejected": 0}
    assert report.unknown_columns == [] and report.rejected_path is None
    users = await users_by_email(store)
    nora, leo, ivy = users["nora.new@org.test"], users["lead.new@org.test"], users["ivy.intern@org.test"]
    assert nora.manager_id == leo.id  # her manager comes later in the file
    assert leo.manager_id == org.users["vp"] and leo.role == "manager" and leo.time_zone == "America/New_York"
    assert (nora.slack_user_id, leo.teams_aad_id) == ("U0NORA", "aad-leo")
    assert ivy.name == "Ivy Intern" and ivy.role == "rep" and ivy.manager_id == leo.id  # "Leo Lead", by name


async def test_accounts_with_documented_columns(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "accounts", copy(tmp_path, "accounts.csv"))
    assert counts(report)["created"] == 3 and not report.rejected
    northwind = await account(store, "A-100")
    assert (northwind.name, northwind.domain, northwind.industry) == ("Northwind Traders", "northwind.example", "Retail")
    assert northwind.owner_id == org.users["rep_a"]
    fabrikam = await account(store, "A-102")
    assert fabrikam.domain is None and fabrikam.owner_id is None  # empty cells are absent


async def test_contacts_with_documented_columns(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "contacts", copy(tmp_path, "contacts.csv"))
    assert counts(report) == {"created": 3, "updated": 0, "unchanged": 0, "stale": 0, "rejected": 1}
    assert problems(report) == [(5, "account_external_id", "unknown account 'A-missing'")]
    async with store.session() as s:
        alan = (await s.execute(select(Contact).where(Contact.external_id == "C-101"))).scalar_one()
    assert alan.email == "alan@globex.example" and alan.account_id == org.accounts["globex"] and alan.phone is None
    # Same email as an existing contact: imported, and flagged.
    [dup] = report.duplicates
    assert (dup.line, dup.key) == (4, "C-102")
    assert dup.others == [{"external_id": "C-coyote", "name": "Wile E. Coyote", "reason": "same email"}]


async def test_opportunities_with_documented_columns(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "opportunities", copy(tmp_path, "opportunities.csv"))
    assert counts(report)["created"] == 3 and not report.rejected
    rollout = await opportunity(store, "O-100")
    assert (rollout.amount, rollout.currency, rollout.stage, rollout.close_date) == (
        Decimal("120000"), "USD", "Proposal", date(2026, 9, 30))
    assert rollout.owner_id == org.users["rep_a"] and rollout.probability == 40 and rollout.status == "open"
    assert {m.user_id for m in rollout.team} == {org.users["se"], org.users["rep_b"]}
    addon = await opportunity(store, "O-101")
    assert addon.status == "won" and addon.amount == Decimal("8000.50")
    audit = await audit_rows(store)
    assert audit and all(a.via == "cli" and a.actor == "tester" for a in audit)
    assert {"O-100", "O-101", "O-102"} <= mentioned(audit)


async def audit_rows(store: Store) -> list[AuditLog]:
    async with store.session() as s:
        return list((await s.execute(select(AuditLog).order_by(AuditLog.id))).scalars())


def mentioned(audit: list[AuditLog]) -> set[str]:
    """Keys an audit trail names, whether one row per item or one per chunk with the keys listed."""
    keys: set[str] = set()
    for a in audit:
        if a.entity_id:
            keys.add(a.entity_id)
        for value in (a.details or {}).values():
            if isinstance(value, list):
                keys.update(str(v) for v in value)
    return keys


# -- Salesforce and HubSpot exports ---------------------------------------------------------------------


async def test_salesforce_users_export(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "users", copy(tmp_path, "users_salesforce.csv"))
    assert report.unknown_columns == ["User ID", "Active"]
    assert counts(report)["created"] == 1 and counts(report)["rejected"] == 3
    olga = (await users_by_email(store))["olga.ops@org.test"]
    assert olga.role == "admin" and olga.manager_id == org.users["vp"]  # "Victor Vance", by name
    assert olga.time_zone == "Europe/Berlin"  # from "(GMT+01:00) Central European Standard Time (Europe/Berlin)"
    found = problems(report)
    assert found[0] == (3, "Role", "must be 'rep', 'manager' or 'admin': 'vp sales'")
    assert found[1][:2] == (4, "Time Zone") and "unknown time zone" in found[1][2]
    assert found[2] == (5, "Manager", "manager paul.pipeline@org.test is rejected too (line 3)")


async def test_salesforce_accounts_export_with_bom_urls_and_owner_names(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "accounts", copy(tmp_path, "accounts_salesforce.csv"))
    assert report.unknown_columns == ["Billing City"]
    assert counts(report)["created"] == 2
    tailspin = await account(store, "001A0001")
    assert tailspin.name == "Tailspin Toys" and tailspin.domain == "tailspin.example"
    assert tailspin.owner_id == org.users["rep_a"]  # "Rita Rep"
    assert tailspin.source_updated_at == datetime(2026, 3, 14, 9, 30, tzinfo=timezone.utc)
    assert (await account(store, "001A0002")).owner_id == org.users["mgr1"]
    assert problems(report) == [(4, "Account Owner", "unknown user 'Nobody Known': give an email or the exact "
                                                     "name of a CRM user")]


async def test_hubspot_companies_export_semicolons(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "accounts", copy(tmp_path, "companies_hubspot.csv"))
    assert counts(report)["created"] == 2 and report.unknown_columns == ["Create Date"]
    works = await account(store, "9001")
    assert works.name == "Adventure Works" and works.owner_id == org.users["rep_b"]  # "Ben Rep <rep.b@org.test>"
    assert (await account(store, "9002")).industry is None


async def test_hubspot_contacts_export_tabs_and_first_last_names(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "contacts", copy(tmp_path, "contacts_hubspot.csv"))
    assert counts(report)["created"] == 1 and report.unknown_columns == ["Lifecycle Stage"]
    assert problems(report) == [(3, "Email", "not an email address: 'not-an-email'")]
    async with store.session() as s:
        ada = (await s.execute(select(Contact).where(Contact.external_id == "501"))).scalar_one()
    assert (ada.name, ada.title, ada.phone, ada.account_id) == (
        "Ada Lovelace", "Analyst", "+44 20 7946 0000", org.accounts["umbrella"])


async def test_salesforce_opportunities_export(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "opportunities", copy(tmp_path, "opportunities_salesforce.csv"))
    assert counts(report)["created"] == 3 and not report.rejected
    assert report.unknown_columns == ["Type", "Lead Source"]
    platform = await opportunity(store, "006A1")
    assert (platform.amount, platform.currency, platform.close_date, platform.probability, platform.status) == (
        Decimal("1250000.00"), "USD", date(2026, 3, 31), 75, "open")
    assert platform.owner_id == org.users["rep_a"] and platform.account_id == org.accounts["acme"]
    assert (await opportunity(store, "006A2")).status == "lost"  # Closed, not Won
    assert (await opportunity(store, "006A3")).status == "won"


async def test_hubspot_deals_export_european_numbers_and_dates(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "opportunities", copy(tmp_path, "deals_hubspot.csv"))
    assert counts(report)["created"] == 2 and report.unknown_columns == ["Pipeline"]
    phase2 = await opportunity(store, "7001")
    assert (phase2.name, phase2.amount, phase2.currency) == ("Société Eaux Phase 2", Decimal("1250000.00"), "EUR")
    assert (phase2.close_date, phase2.probability, phase2.status) == (date(2026, 6, 15), 60, "open")
    pilot = await opportunity(store, "7002")
    assert (pilot.currency, pilot.status, pilot.owner_id) == ("CHF", "lost", org.users["rep_c"])


async def test_currency_from_the_amount_or_the_option_and_windows_1252_files(
    store: Store, org: Org, tmp_path: Path
) -> None:
    path = tmp_path / "deals.csv"
    path.write_bytes("Deal ID;Deal Name;Company ID;Amount;Deal Stage;Deal owner\n"
                     "D-1;Société Pilot;A-societe;€ 12.000,00;Proposal;Rita Rep\n"
                     "D-2;Plain Deal;A-acme;5000;Proposal;Rita Rep\n".encode("cp1252"))
    report = await load(store, "opportunities", path)
    assert report.notes == ["deals.csv is not UTF-8; read it as Windows-1252"]
    pilot = await opportunity(store, "D-1")
    assert (pilot.name, pilot.amount, pilot.currency) == ("Société Pilot", Decimal("12000.00"), "EUR")
    assert problems(report) == [(3, "currency", "no currency: add a Currency column, a symbol in the amount "
                                                "($, €…) or --currency")]
    again = await load(store, "opportunities", path, default_currency="gbp")
    assert counts(again)["created"] == 1 and (await opportunity(store, "D-2")).currency == "GBP"
    assert counts(again)["unchanged"] == 1  # the symbol wins over --currency


# -- rejected rows ------------------------------------------------------------------------------------------


async def test_rejected_rows_have_line_column_reason_and_go_to_a_rejected_file(
    store: Store, org: Org, tmp_path: Path
) -> None:
    path = copy(tmp_path, "opportunities_bad.csv")
    report = await load(store, "opportunities", path)
    assert counts(report) == {"created": 2, "updated": 0, "unchanged": 0, "stale": 0, "rejected": 6}
    assert problems(report) == [
        # line 2-3 is one row with a quoted name over two lines
        (4, "close_date", "not a real date: '2026-02-30' (use YYYY-MM-DD, M/D/YYYY or D.M.YYYY)"),
        (5, "amount", "not an amount: '12abc' (write a number such as 1250000.00 or $1,250,000.00)"),
        (6, "account_external_id", "unknown account 'A-nowhere'"),  # from the sync engine
        (7, "owner_email", "unknown user 'ghost@org.test'"),
        (8, "amount", "must not be negative (got -5)"),
        (8, "currency", "not a 3-letter currency code: 'EURO'"),
        (9, "external_id", "missing external_id (every row needs one)"),
        # line 10 is blank; line 11 is fine
    ]
    assert (await opportunity(store, "O-new1")).name == "Acme Expansion\n(phase 2)"
    assert (await opportunity(store, "O-ok2")).close_date == date(2026, 12, 31)

    assert report.rejected_path == tmp_path / "opportunities_bad.rejected.csv"
    rows = rejected_rows(report)
    assert list(rows[0]) == ["external_id", "name", "account_external_id", "amount", "currency", "stage",
                             "close_date", "owner_email", "team_emails", "status", "line", "column", "reason"]
    assert [(r["external_id"], r["line"], r["column"]) for r in rows] == [
        ("O-bad-date", "4", "close_date"), ("O-bad-amount", "5", "amount"),
        ("O-no-account", "6", "account_external_id"), ("O-ghost-owner", "7", "owner_email"),
        ("O-two", "8", "amount; currency"), ("", "9", "external_id")]
    assert rows[1]["amount"] == "12abc"  # the original cells, as they were
    assert rows[4]["reason"] == "amount: must not be negative (got -5); currency: not a 3-letter currency code: 'EURO'"

    # Fixed and fed back in: the extra columns are ignored, the old rejected file goes away.
    fixed = tmp_path / "opportunities_fixed.csv"
    with fixed.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow({**rows[0], "close_date": "2026-02-28"})
    again = await load(store, "opportunities", fixed)
    assert counts(again)["created"] == 1 and again.unknown_columns == [] and again.rejected_path is None


async def test_a_key_repeated_in_the_file_is_rejected_after_its_first_line(store: Store, org: Org, tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    path.write_text("external_id,name\nA-1,First\nA-2,Other\nA-1,Second\n", encoding="utf-8")
    report = await load(store, "accounts", path)
    assert counts(report)["created"] == 2
    assert problems(report) == [(4, "external_id", "A-1 already appears on line 2")]
    assert (await account(store, "A-1")).name == "First"


async def test_a_clean_run_removes_an_old_rejected_file(store: Store, org: Org, tmp_path: Path) -> None:
    path = copy(tmp_path, "accounts.csv")
    stale = rejected_path_for(path)
    stale.write_text("old\n")
    report = await load(store, "accounts", path)
    assert report.rejected_path is None and not stale.exists()


# -- re-import -----------------------------------------------------------------------------------------------

EVERYTHING = [("users", "users.csv"), ("accounts", "accounts.csv"), ("accounts", "accounts_salesforce.csv"),
              ("accounts", "companies_hubspot.csv"), ("contacts", "contacts.csv"),
              ("contacts", "contacts_hubspot.csv"), ("opportunities", "opportunities.csv"),
              ("opportunities", "opportunities_salesforce.csv"), ("opportunities", "deals_hubspot.csv")]


async def test_importing_the_same_files_again_changes_nothing(store: Store, org: Org, tmp_path: Path) -> None:
    first = [await load(store, kind, copy(tmp_path, name)) for kind, name in EVERYTHING]
    assert sum(r.counts["created"] for r in first) == 22
    before = await snapshot(store)
    again = [await load(store, kind, tmp_path / name) for kind, name in EVERYTHING]
    for report, (kind, name) in zip(again, EVERYTHING):
        done = counts(report)
        assert done["created"] == done["updated"] == done["stale"] == 0, name
        assert done["unchanged"] == report.rows - done["rejected"], name
        assert not report.duplicates
    assert await snapshot(store) == before  # no history, timeline, audit or outbox rows, no row touched


async def test_a_changed_row_is_updated_with_history_and_an_older_one_is_stale(
    store: Store, org: Org, tmp_path: Path
) -> None:
    path = copy(tmp_path, "opportunities.csv")
    await load(store, "opportunities", path)
    path.write_text(path.read_text().replace("120000,USD,Proposal", "150000,USD,Negotiation"))
    report = await load(store, "opportunities", path)
    assert counts(report)["updated"] == 1 and counts(report)["unchanged"] == 2
    opp = await opportunity(store, "O-100")
    async with store.session() as s:
        fields = set((await s.execute(select(OpportunityHistory.field)
                                      .where(OpportunityHistory.opportunity_id == opp.id))).scalars())
    assert fields == {"stage", "amount"}

    accounts = copy(tmp_path, "accounts_salesforce.csv")
    await load(store, "accounts", accounts)
    older = accounts.read_text(encoding="utf-8-sig").replace("Tailspin Toys", "Tailspin Old").replace(
        "3/14/2026 9:30 AM", "3/13/2026")
    accounts.write_text(older, encoding="utf-8")
    report = await load(store, "accounts", accounts)
    assert counts(report)["stale"] == 1 and (await account(store, "001A0001")).name == "Tailspin Toys"


# -- duplicates in the report -----------------------------------------------------------------------------------


async def test_possible_duplicates_are_flagged_with_external_ids(store: Store, org: Org, tmp_path: Path) -> None:
    report = await load(store, "accounts", copy(tmp_path, "accounts_dupes.csv"))
    assert counts(report)["created"] == 6  # flagged, still imported
    flagged = {d.key: [(o["external_id"], o["reason"]) for o in d.others] for d in report.duplicates}
    assert flagged == {
        "A-200": [("A-acme", "same name")],  # "Acme Inc." ~ "ACME Corporation, Inc." (suffix, case)
        "A-201": [("A-globex", "same name")],  # "GLOBEX corp"
        "A-202": [("A-societe", "same name")],  # "Societe Generale des Eaux S.A." (accents)
        "A-205": [("A-acme", "same domain")],  # acme.example
    }  # "Initrode Ltd" and "Umbrellas Unlimited" are other companies
    assert [d.line for d in report.duplicates] == [2, 3, 4, 7]


async def test_duplicates_within_one_file_are_flagged(store: Store, org: Org, tmp_path: Path) -> None:
    path = tmp_path / "twins.csv"
    path.write_text("Account ID,Account Name\nN-1,Nakatomi Trading Corp\nN-2,Nakatomi Trading GmbH\n")
    report = await load(store, "accounts", path)
    [dup] = report.duplicates
    assert dup.key == "N-2" and dup.others[0]["external_id"] == "N-1"


# -- unusable input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "content", "message"), [
    ("accounts", None, "no such file"),
    ("accounts", b"", "the file is empty"),
    ("accounts", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", "not a CSV file (it contains binary data"),
    ("accounts", b"just some words\nand more\n", "not a CSV file with a header line"),
    ("accounts", b"Account Name,Industry\nAcme,Software\n", 'no key column: accounts need a column for external_id'),
    ("opportunities", b"external_id,name,account_external_id\nO-1,X,A-acme\n",
     "missing columns for opportunities: amount:"),
    ("users", b"Email,Role\na@b.test,rep\n", "missing columns for users: name:"),
], ids=["missing", "empty", "binary", "one-column", "no-key", "no-amount", "no-name"])
async def test_unusable_files_are_refused_and_nothing_is_written(
    store: Store, org: Org, tmp_path: Path, kind: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    before = await snapshot(store)
    with pytest.raises(UnusableInput) as error:
        await load(store, kind, path)
    assert message in str(error.value)
    assert await snapshot(store) == before and not rejected_path_for(path).exists()


async def test_progress_is_reported(store: Store, org: Org, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    await load(store, "accounts", copy(tmp_path, "accounts.csv"), progress=lambda *a: seen.append(a))
    assert ("Checking rows", 3, 3) in seen and seen[-1] == ("Importing", 3, 3)


async def test_big_files_go_to_the_store_in_batches(store: Store, org: Org, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("id;name;owner\n" + "".join(f"M-{i};Company {i};rep.a@org.test\n" for i in range(25)))
    seen: list[tuple[str, int, int]] = []
    report = await load(store, "accounts", path, batch=10, progress=lambda *a: seen.append(a))
    assert counts(report)["created"] == 25
    assert [s for s in seen if s[0] == "Importing"] == [("Importing", 10, 25), ("Importing", 20, 25),
                                                         ("Importing", 25, 25)]


# -- cell formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "amount", "currency"), [
    ("1250000", "1250000", None), ("$1,250,000.00", "1250000.00", "USD"), ("1.250.000,00 €", "1250000.00", "EUR"),
    ("USD 1,000", "1000", "USD"), ("12,50", "12.50", None), ("1 250 000", "1250000", None),
    ("1'250'000.5", "1250000.5", None), ("£99", "99", "GBP"), ("(100)", "-100", None),
])
def test_amounts(text: str, amount: str, currency: str | None) -> None:
    assert parse_amount(text) == (Decimal(amount), currency)


@pytest.mark.parametrize("text", ["12abc", "1,2,3", "1.25.0", "$", "--5", "1,000.000,00"])
def test_bad_amounts(text: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        parse_amount(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-31", date(2026, 3, 31)), ("2026/3/31", date(2026, 3, 31)), ("3/31/2026", date(2026, 3, 31)),
    ("31.03.2026", date(2026, 3, 31)), ("1.2.2026", date(2026, 2, 1)), ("2026-03-31 00:00", date(2026, 3, 31)),
])
def test_dates(text: str, expected: date) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["31/03/2026", "03-31-2026", "2026-02-30", "31.3.26", "tomorrow"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_date(text)


def test_timestamps() -> None:
    assert parse_datetime("3/31/2026 2:05 PM") == datetime(2026, 3, 31, 14, 5, tzinfo=timezone.utc)
    assert parse_datetime("2026-03-31T14:05:00Z") == datetime(2026, 3, 31, 14, 5, tzinfo=timezone.utc)
    assert parse_datetime("31.03.2026 14:05 +02:00") == datetime(2026, 3, 31, 12, 5, tzinfo=timezone.utc)


def test_every_column_name_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "CSV.md").read_text()
    for kind, columns in COLUMNS.items():
        assert f"### {kind}" in doc
        for column in columns:
            for name in column.names:
                assert name in doc, (kind, name)


# -- the real command -------------------------------------------------------------------------------------------------


async def test_import_command_end_to_end(store: Store, org: Org, db_url: str, tmp_path: Path) -> None:
    path = copy(tmp_path, "accounts_salesforce.csv")
    env = {"DATABASE_URL": db_url, "USER": "ops-lead"}
    first = run(["import", "accounts", str(path)], env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert 'Warning: ignored columns that are not accounts fields: "Billing City"' in first.stderr
    out = first.stdout
    assert "Imported accounts from accounts_salesforce.csv: 3 rows." in out
    assert "created          2" in out and "rejected         1" in out
    assert "line 4, Account Owner: unknown user 'Nobody Known'" in out
    assert f"all of them are in {tmp_path / 'accounts_salesforce.rejected.csv'}" in out
    with (tmp_path / "accounts_salesforce.rejected.csv").open(encoding="utf-8-sig", newline="") as f:
        [rejected] = list(csv.DictReader(f))
    assert rejected["Account ID"] == "001A0003" and rejected["line"] == "4" and rejected["column"] == "Account Owner"
    assert "Traceback" not in first.stderr and "\x1b[" not in first.stderr  # no progress bar without a terminal
    audit = await audit_rows(store)
    assert {(a.via, a.actor) for a in audit} == {("cli", "ops-lead")} and {"001A0001", "001A0002"} <= mentioned(audit)

    again = run(["import", "accounts", str(path)], env=env, cwd=tmp_path)
    assert again.returncode == 0 and "unchanged        2" in again.stdout and "created          0" in again.stdout
    assert len(await audit_rows(store)) == len(audit)

    dupes = run(["import", "accounts", str(copy(tmp_path, "accounts_dupes.csv"))], env=env, cwd=tmp_path)
    assert 'line 2: A-200 "Acme Inc." may duplicate A-acme "ACME Corporation, Inc." (same name)' in dupes.stdout


def test_import_command_refuses_unusable_input_with_exit_code_2(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    (tmp_path / "nokey.csv").write_text("Account Name;Industry\nAcme;Software\n")
    for args, message in [
        (["import", "accounts", "missing.csv"], "Cannot import missing.csv: missing.csv: no such file"),
        (["import", "accounts", "nokey.csv"], "no key column: accounts need a column for external_id"),
        (["import", "deals", "nokey.csv"], "Invalid value for"),
    ]:
        result = run(args, env=env, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr

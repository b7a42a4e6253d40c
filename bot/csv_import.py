"""CSV import: a spreadsheet or a Salesforce/HubSpot export in, the sync engine's upserts out.

The file is read and checked as a whole first (so a file that cannot be read writes nothing),
then the valid rows go to `crm_store.sync.Sync` in batches. Each rejected row keeps its line
number (as in the file; the header is line 1), the column at fault and the reason; they are
written next to the input as ``<name>.rejected.csv``. docs/CSV.md lists the columns.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from bot.csv_cells import (
    STATUSES,
    header_key,
    CellError,
    parse_amount,
    parse_bool,
    parse_date,
    parse_datetime,
    parse_domain,
    parse_probability,
    parse_status,
    parse_time_zone,
)
from crm_store import Store
from crm_store.models import User
from crm_store.records import KEY_FIELD, RECORDS, Record
from crm_store.sync import ItemResult, Sync, Who

BATCH = 1000
KINDS = tuple(RECORDS)
DELIMITERS = (",", ";", "\t")
REJECT_COLUMNS = ("line", "column", "reason")
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class UnusableInput(Exception):
    """The file cannot be imported at all (missing, not CSV, no key column…); nothing was written."""


# -- columns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A field and the header names that feed it, in priority order (the first non-empty wins)."""

    field: str
    names: tuple[str, ...]
    required: bool = False
    note: str = ""


def _id(*extra: str) -> tuple[str, ...]:
    return ("external_id", *extra, "Id", "Record ID", "hs_object_id")


_UPDATED = Column("source_updated_at", ("source_updated_at", "Last Modified Date", "Last Modified", "Updated At",
                                        "hs_lastmodifieddate"),
                  note="a row older than what is stored is skipped (stale)")
_FIRST = Column("first_name", ("First Name", "Given Name"), note="used with Last Name when there is no name")
_LAST = Column("last_name", ("Last Name", "Surname", "Family Name"))
_PERSON = "an email, \"Name <email>\", or the exact name of a CRM user"

COLUMNS: dict[str, tuple[Column, ...]] = {
    "users": (
        Column("email", ("email", "Email Address", "User Email", "Work Email"), True, "the key"),
        Column("name", ("name", "Full Name"), True, "or First Name + Last Name"),
        _FIRST, _LAST,
        Column("role", ("role", "Dealbot Role"), note="rep (default), manager or admin"),
        Column("manager_email", ("manager_email", "Manager"),
               note="an email, or the exact name of a user in the CRM or in the same file"),
        Column("time_zone", ("time_zone", "Time Zone Sid Key", "TZ"),
               note="IANA name such as Europe/Berlin; Salesforce's \"(GMT+01:00) … (Europe/Berlin)\" works"),
        Column("slack_user_id", ("slack_user_id", "Slack ID", "Slack Member ID")),
        Column("teams_aad_id", ("teams_aad_id", "AAD Object ID", "Azure AD Object ID", "Entra Object ID")),
    ),
    "accounts": (
        Column("external_id", _id("Account ID", "account_external_id", "Company ID"), True, "the key"),
        Column("name", ("name", "Account Name", "Company Name", "Company"), True),
        Column("domain", ("domain", "Website", "Company Domain Name", "Domain Name"),
               note="a URL is reduced to its host name, without www."),
        Column("industry", ("industry",)),
        Column("owner_email", ("owner_email", "Account Owner Email", "Company Owner Email", "Account Owner",
                               "Company owner", "Owner"), note=_PERSON),
        _UPDATED,
    ),
    "contacts": (
        Column("external_id", _id("Contact ID"), True, "the key"),
        Column("name", ("name", "Full Name", "Contact Name"), True, "or First Name + Last Name"),
        _FIRST, _LAST,
        Column("email", ("email", "Email Address")),
        Column("title", ("title", "Job Title")),
        Column("phone", ("phone", "Phone Number", "Business Phone", "Mobile", "Mobile Phone", "Mobile Phone Number"),
               note="the first of these columns that has a value"),
        Column("account_external_id", ("account_external_id", "Account ID", "Company ID", "Associated Company ID",
                                       "Primary Associated Company ID"), True),
        _UPDATED,
    ),
    "opportunities": (
        Column("external_id", _id("Opportunity ID", "Deal ID"), True, "the key"),
        Column("name", ("name", "Opportunity Name", "Deal Name"), True),
        Column("account_external_id", ("account_external_id", "Account ID", "Company ID", "Associated Company ID"),
               True),
        Column("amount", ("amount", "Deal Amount", "Opportunity Amount"), True,
               "1250000, 1250000.00, $1,250,000.00, 1.250.000,00 €, USD 1,000"),
        Column("currency", ("currency", "Currency ISO Code", "Opportunity Currency", "Deal Currency Code"), True,
               "3-letter code; if empty, the amount's symbol or code ($ is USD), else --currency"),
        Column("stage", ("stage", "Stage Name", "Deal Stage"), True),
        Column("close_date", ("close_date", "Expected Close Date")),
        Column("owner_email", ("owner_email", "Opportunity Owner Email", "Deal Owner Email", "Opportunity Owner",
                               "Deal owner", "Owner"), True, _PERSON),
        Column("team_emails", ("team_emails", "Deal Team", "Deal Team Emails", "Team"),
               note="separated by semicolons (or commas); each as for owner_email"),
        Column("status", ("status", "Deal Status", "Opportunity Status"),
               note="open, won or lost (Closed Won / Closed Lost too)"),
        Column("won", ("Won", "Is Won"), note="true/false (Salesforce); used when there is no status"),
        Column("closed", ("Closed", "Is Closed"), note="true/false (Salesforce); used when there is no status"),
        Column("probability", ("probability", "Deal Probability", "Win Probability"),
               note="0-100, as 60 or 60%, or a fraction with a decimal point such as 0.6 (HubSpot)"),
        _UPDATED,
    ),
}



@dataclass
class Mapping:
    kind: str
    header: list[str]
    sources: dict[str, list[int]]  # field -> column indexes, best first
    unknown: list[str]
    key_field: str

    @classmethod
    def from_header(cls, kind: str, header: list[str]) -> Mapping:
        keys = [header_key(h) for h in header]
        sources: dict[str, list[int]] = {}
        used: set[int] = set()
        for column in COLUMNS[kind]:
            for name in column.names:
                for i, key in enumerate(keys):
                    if key and key == header_key(name) and i not in used:
                        sources.setdefault(column.field, []).append(i)
                        used.add(i)
        ours = {header_key(c) for c in REJECT_COLUMNS}
        tail = keys[-3:] == [header_key(c) for c in REJECT_COLUMNS]  # a .rejected.csv fed back in
        unknown = [h for i, (h, k) in enumerate(zip(header, keys))
                   if i not in used and k and not (tail and k in ours and i >= len(keys) - 3)]
        mapping = cls(kind, header, sources, unknown, KEY_FIELD[kind])
        mapping._check()
        return mapping

    def _check(self) -> None:
        by_field = {c.field: c for c in COLUMNS[self.kind]}
        key = by_field[self.key_field]
        if self.key_field not in self.sources:
            raise UnusableInput(f"no key column: {self.kind} need a column for {self.key_field} "
                                f"({_names(key)}); the header has {_quoted(self.header)}")
        missing = []
        for column in COLUMNS[self.kind]:
            if not column.required or column.field in self.sources:
                continue
            if column.field == "name" and ("first_name" in self.sources or "last_name" in self.sources):
                continue
            if column.field == "currency":
                continue  # the amounts may carry it, or --currency; else each row says what is missing
            hint = " (or First Name and Last Name)" if column.field == "name" and "first_name" in by_field else ""
            missing.append(f"{column.field}: {_names(column)}{hint}")
        if missing:
            raise UnusableInput(f"missing columns for {self.kind}: " + "; ".join(missing))

    def column_of(self, field_name: str, row: list[str] | None = None) -> str:
        """The header name a field's value came from (the first non-empty source in `row`)."""
        if field_name == "name" and "name" not in self.sources:
            parts = [self.header[i] for f in ("first_name", "last_name") for i in self.sources.get(f, [])[:1]]
            return " + ".join(parts) or "name"
        indexes = self.sources.get(field_name, [])
        if not indexes:
            return field_name
        if row is not None:
            for i in indexes:
                if i < len(row) and row[i].strip():
                    return self.header[i]
        return self.header[indexes[0]]

    def value(self, field_name: str, row: list[str]) -> str | None:
        for i in self.sources.get(field_name, []):
            if i < len(row) and row[i].strip():
                return row[i].strip()
        return None


def _names(column: Column) -> str:
    return "one of " + ", ".join(f'"{n}"' for n in column.names)


def _quoted(header: list[str]) -> str:
    shown = ", ".join(f'"{h}"' for h in header[:12])
    return shown + (", …" if len(header) > 12 else "")


# -- reading the file ---------------------------------------------------------------------------


@dataclass
class Table:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line of the row's start, cells)
    delimiter: str
    bom: bool
    encoding: str


def read_table(path: Path) -> Table:
    """The rows of a CSV file, with BOM, encoding and delimiter handled; UnusableInput otherwise."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnusableInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UnusableInput(f"{path}: is a directory, not a CSV file") from None
    except OSError as error:
        raise UnusableInput(f"{path}: cannot read it ({error.strerror or error})") from None
    bom = raw.startswith(b"\xef\xbb\xbf")
    if b"\x00" in raw[:65536]:
        raise UnusableInput(f"{path}: not a CSV file (it contains binary data; "
                            "export as CSV, UTF-8, rather than as a spreadsheet)")
    encoding = "utf-8"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text, encoding = raw.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            raise UnusableInput(f"{path}: not a CSV text file (neither UTF-8 nor Windows-1252)") from None
    if not text.strip():
        raise UnusableInput(f"{path}: the file is empty; the first line must be a header")
    first_line = text.lstrip("\r\n").splitlines()[0]
    delimiter = max(DELIMITERS, key=lambda d: _count_outside_quotes(first_line, d))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    last_line = 0
    try:
        for cells in reader:
            start, last_line = last_line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank lines
            if header is None:
                header = [c.strip() for c in cells]
            else:
                rows.append((start, cells))
    except csv.Error as error:
        raise UnusableInput(f"{path}, line {reader.line_num}: not valid CSV ({error})") from None
    assert header is not None
    if len(header) < 2 or all(not h for h in header):
        raise UnusableInput(f"{path}: not a CSV file with a header line (found {_quoted(header)}); "
                            "separate columns with commas, semicolons or tabs")
    return Table(header, rows, delimiter, bom, encoding)


def _count_outside_quotes(line: str, delimiter: str) -> int:
    count, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            count += 1
    return count


_EMAIL_IN = re.compile(r"[^@\s<>()\"',;]+@[^@\s<>()\"',;]+\.[^@\s<>()\"',;]+")


class People:
    """Owner, manager and team cells may hold an email, "Name <email>" or the exact name of a user."""

    def __init__(self, by_name: dict[str, set[str]], live: set[str], erased: set[str]) -> None:
        self.by_name = by_name
        self.live = live  # emails of users in the CRM
        self.erased = erased  # placeholder emails of erased users

    @classmethod
    async def load(cls, store: Store, extra: Iterable[tuple[str, str]] = ()) -> People:
        async with store.session() as s:
            rows = (await s.execute(select(User.name, User.email, User.erased_at))).all()
        by_name: dict[str, set[str]] = {}
        for name, email in [*((n, e) for n, e, erased in rows if erased is None), *extra]:
            by_name.setdefault(_person_key(name), set()).add(email.lower())
        return cls(by_name, {e.lower() for _, e, erased in rows if erased is None},
                   {e.lower() for _, e, erased in rows if erased is not None})

    def email(self, text: str) -> str:
        found = _EMAIL_IN.search(text)
        if found:
            return found.group(0).lower()
        if "@" in text:
            return text.strip().lower()  # validation says what is wrong with it
        emails = self.by_name.get(_person_key(text), set())
        if len(emails) == 1:
            return next(iter(emails))
        if emails:
            raise CellError(f"several users are named {text.strip()!r}; give an email")
        raise CellError(f"unknown user {text.strip()!r}: give an email or the exact name of a CRM user")

    def emails(self, text: str) -> list[str]:
        return list(dict.fromkeys(self.email(p) for p in re.split(r"[;,\n]", text) if p.strip()))


def _person_key(name: str) -> str:
    return " ".join(name.casefold().split())


CELL_PARSERS: dict[str, Callable[[str], Any]] = {
    "close_date": parse_date,
    "source_updated_at": parse_datetime,
    "status": parse_status,
    "probability": parse_probability,
    "domain": parse_domain,
    "time_zone": parse_time_zone,
    "role": lambda text: text.strip().lower(),
}
_HELPER_FIELDS = ("first_name", "last_name", "won", "closed")


# -- rows to records ------------------------------------------------------------------------------


@dataclass
class Rejected:
    line: int
    cells: list[str]
    problems: list[tuple[str, str]]  # (column as in the header, reason)

    @property
    def column(self) -> str:
        return "; ".join(dict.fromkeys(c for c, _ in self.problems))

    @property
    def reason(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0][1]
        return "; ".join(f"{c}: {r}" if c else r for c, r in self.problems)


@dataclass
class Parsed:
    line: int
    cells: list[str]
    key: str
    record: Record


class RowParser:
    def __init__(self, mapping: Mapping, people: People, default_currency: str | None = None) -> None:
        self.m = mapping
        self.people = people
        self.default_currency = default_currency

    def parse(self, line: int, cells: list[str]) -> Parsed | Rejected:
        m = self.m
        if len(cells) > len(m.header) and any(c.strip() for c in cells[len(m.header):]):
            return Rejected(line, cells, [("", f"the row has {len(cells)} cells but the header has "
                                               f"{len(m.header)} columns (check quotes and delimiters)")])
        problems: list[tuple[str, str]] = []
        data: dict[str, Any] = {}
        bad: set[str] = set()
        implied_currency: str | None = None
        key = m.value(m.key_field, cells)
        if key is None:
            problems.append((m.column_of(m.key_field), f"missing {m.key_field} (every row needs one)"))
        else:
            key = key.lower() if m.kind == "users" else key
            if problem := _check_key(m.kind, key):
                problems.append((m.column_of(m.key_field, cells), problem))
        for column in COLUMNS[m.kind]:
            name = column.field
            text = m.value(name, cells)
            if name == m.key_field or name in _HELPER_FIELDS or text is None:
                continue
            try:
                if name == "amount":
                    data[name], implied_currency = parse_amount(text)
                elif name in ("owner_email", "manager_email"):
                    data[name] = self.people.email(text)
                elif name == "team_emails":
                    data[name] = self.people.emails(text)
                else:
                    data[name] = CELL_PARSERS.get(name, str.strip)(text)
            except CellError as error:
                problems.append((m.column_of(name, cells), str(error)))
                bad.add(name)
        if "name" not in data and "name" in {c.field for c in COLUMNS[m.kind]}:
            parts = [m.value(f, cells) for f in ("first_name", "last_name")]
            if any(parts):
                data["name"] = " ".join(p for p in parts if p)
        if m.kind == "opportunities":
            if "currency" not in data:
                currency = implied_currency or self.default_currency
                if currency:
                    data["currency"] = currency
            if "status" not in data and "status" not in bad:
                try:
                    status = self._status(cells, data.get("stage"))
                except CellError as error:
                    problems.append((m.column_of("won" if "won" in m.sources else "closed", cells), str(error)))
                    bad.add("status")
                else:
                    if status:
                        data["status"] = status
        record: Record | None = None
        try:
            record = RECORDS[m.kind].model_validate(data)
        except ValidationError as error:
            for e in error.errors():
                name = str(e["loc"][0]) if e["loc"] else ""
                if name not in bad:
                    bad.add(name)
                    reason = _reason(name, e)
                    if name == "currency" and reason == "missing value":
                        reason = "no currency: add a Currency column, a symbol in the amount ($, €…) or --currency"
                    problems.append((m.column_of(name, cells), reason))
        if problems or record is None or key is None:
            return Rejected(line, cells, problems)
        return Parsed(line, cells, key, record)

    def _status(self, cells: list[str], stage: str | None) -> str | None:
        """From Won/Closed flags (Salesforce), else from a "Closed Won"/"Closed Lost" stage."""
        won_text, closed_text = self.m.value("won", cells), self.m.value("closed", cells)
        won = parse_bool(won_text) if won_text else None
        closed = parse_bool(closed_text) if closed_text else None
        if won:
            return "won"
        if closed:
            return "lost"
        if closed is False:
            return "open"
        stage_key = header_key(stage or "")
        return STATUSES.get(stage_key) if stage_key != "open" else None


def _reason(field_name: str, error: Any) -> str:
    """Pydantic's error, said for a person editing a spreadsheet."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    shown = f": {value!r}" if isinstance(value, str) and value else ""
    if kind in ("missing", "string_too_short"):
        return "missing value"
    if kind == "string_pattern_mismatch":
        if "email" in field_name:
            return f"not an email address{shown}"
        if field_name == "currency":
            return f"not a 3-letter currency code{shown}"
        if "external_id" in field_name:
            return f"an id cannot contain spaces, '/', '?' or '#'{shown}"
    if kind == "string_too_long":
        return f"too long (at most {ctx.get('max_length')} characters)"
    if kind in ("greater_than_equal", "greater_than") and field_name == "amount":
        return f"must not be negative (got {value})"
    if kind in ("less_than_equal", "less_than"):
        return f"too large (got {value})"
    if kind == "decimal_max_places":
        return f"at most {ctx.get('decimal_places')} decimal places (got {value})"
    if kind == "too_long":
        return f"too many entries (at most {ctx.get('max_length')})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}{shown}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ") + shown
    return str(error["msg"]) + shown


def _check_key(kind: str, key: str) -> str | None:
    if kind == "users":
        ok = re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", key) and len(key) <= 320
        return None if ok else f"not an email address: {key!r}"
    if len(key) > 128:
        return "too long (at most 128 characters)"
    if re.search(r"[\s/?#]", key):
        return f"an id cannot contain spaces, '/', '?' or '#': {key!r}"
    return None


# -- the import -------------------------------------------------------------------------------------


@dataclass
class Duplicate:
    line: int
    key: str
    name: str
    others: list[dict[str, Any]]  # {"external_id", "name", "reason"} from the sync engine


@dataclass
class ImportReport:
    kind: str
    path: Path
    rows: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    rejected_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def rejected_path_for(path: Path) -> Path:
    """``accounts.csv`` -> ``accounts.rejected.csv`` (next to the input)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.rejected.csv")


async def import_csv(store: Store, kind: str, path: Path, who: Who, *, default_currency: str | None = None,
                     progress: Progress | None = None, batch: int | None = None) -> ImportReport:
    """Import `path` as `kind`; UnusableInput (nothing written) when the file cannot be used at all."""
    if kind not in RECORDS:
        raise UnusableInput(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    if default_currency and not re.fullmatch(r"[A-Za-z]{3}", default_currency):
        raise UnusableInput(f"--currency {default_currency!r}: use a 3-letter code such as USD")
    table = read_table(path)
    mapping = Mapping.from_header(kind, table.header)
    report = ImportReport(kind, path, rows=len(table.rows), unknown_columns=mapping.unknown)
    if table.encoding != "utf-8":
        report.notes.append(f"{path.name} is not UTF-8; read it as Windows-1252")
    people = await People.load(store, _names_in_file(mapping, table) if kind == "users" else ())
    parser = RowParser(mapping, people, default_currency.upper() if default_currency else None)

    parsed: list[Parsed] = []
    first_line: dict[str, int] = {}
    total = len(table.rows)
    for done, (line, cells) in enumerate(table.rows, 1):
        out = parser.parse(line, cells)
        if isinstance(out, Parsed) and out.key in first_line:
            out = Rejected(line, cells, [(mapping.column_of(mapping.key_field, cells),
                                          f"{out.key} already appears on line {first_line[out.key]}")])
        if isinstance(out, Parsed):
            first_line[out.key] = line
            parsed.append(out)
        else:
            report.rejected.append(out)
        if progress and (done % 500 == 0 or done == total):
            progress("Checking rows", done, total)
    if kind == "users":
        parsed = _managers_first(parsed, report.rejected, people, mapping)

    sync = Sync(store, who)
    batch = batch or BATCH
    for start in range(0, len(parsed), batch):
        chunk = parsed[start : start + batch]
        results = await sync.upsert(kind, [(p.key, p.record) for p in chunk])
        by_key: dict[str, ItemResult] = {r.key: r for r in results}
        for p in chunk:
            result = by_key[p.key]
            if result.status == "error":
                report.rejected.append(Rejected(p.line, p.cells, [_sync_problem(mapping, p.cells, result)]))
                continue
            report.counts[result.status] += 1
            if result.duplicates:
                report.duplicates.append(Duplicate(p.line, p.key, getattr(p.record, "name", p.key), result.duplicates))
        if progress:
            progress("Importing", min(start + batch, len(parsed)), len(parsed))
    if progress and not parsed:
        progress("Importing", 0, 0)
    report.rejected.sort(key=lambda r: r.line)
    report.counts["rejected"] = len(report.rejected)
    try:
        report.rejected_path = write_rejected(path, table, mapping, report.rejected)
    except OSError as error:  # the import itself is done; say why the list is only on screen
        report.notes.append(f"could not write {rejected_path_for(path)}: {error.strerror or error}")
    return report


def _names_in_file(mapping: Mapping, table: Table) -> list[tuple[str, str]]:
    """(name, email) of the users in a users file, so a Manager cell may name one of them."""
    out = []
    for _, cells in table.rows:
        email = mapping.value("email", cells)
        name = mapping.value("name", cells) or " ".join(
            p for p in (mapping.value("first_name", cells), mapping.value("last_name", cells)) if p)
        if email and name:
            out.append((name, email.lower()))
    return out


def _managers_first(parsed: list[Parsed], rejected: list[Rejected], people: People, mapping: Mapping) -> list[Parsed]:
    """Users whose manager is neither in the CRM nor (validly) in the file are rejected; the rest
    is ordered managers first, so a manager always exists by the time the sync engine needs it."""
    rows = {p.key: p for p in parsed}
    for key in list(rows):
        if key in people.erased:
            p = rows.pop(key)
            rejected.append(Rejected(p.line, p.cells, [(mapping.column_of("email", p.cells),
                                                        "this user was erased")]))
    rejected_at = {(mapping.value("email", r.cells) or "").lower(): r.line for r in rejected}
    changed = True
    while changed:
        changed = False
        for key, p in list(rows.items()):
            manager = getattr(p.record, "manager_email", None)
            if manager and manager not in rows and manager not in people.live:
                del rows[key]
                changed = True
                rejected_at.setdefault(key, p.line)
                why = (f"manager {manager} is rejected too (line {rejected_at[manager]})" if manager in rejected_at
                       else f"unknown user {manager!r} (not in the CRM, nor in this file)")
                rejected.append(Rejected(p.line, p.cells, [(mapping.column_of("manager_email", p.cells), why)]))
    ordered: list[Parsed] = []
    placed: set[str] = set()

    def place(key: str, path: set[str]) -> None:
        if key in placed or key not in rows or key in path:
            return
        manager = getattr(rows[key].record, "manager_email", None)
        if manager:
            place(manager, path | {key})
        if key not in placed:
            placed.add(key)
            ordered.append(rows[key])

    for p in parsed:
        place(p.key, set())
    return ordered


def _sync_problem(mapping: Mapping, cells: list[str], result: ItemResult) -> tuple[str, str]:
    error = result.error or {}
    field_name, message = error.get("field", ""), error.get("message", "rejected")
    if not field_name:
        used = re.match(r"(\w+) is already used", message)
        field_name = used.group(1) if used and used.group(1) in mapping.sources else mapping.key_field
    message = re.sub(r"^no (account|user)(?: with email)? ", r"unknown \1 ", message)
    return mapping.column_of(field_name, cells), message


def write_rejected(path: Path, table: Table, mapping: Mapping, rejected: list[Rejected]) -> Path | None:
    """Rejected rows with their original cells plus line, column and reason; None when there are none
    (an old file from an earlier run is removed then, so what is there is always current)."""
    out = rejected_path_for(path)
    if not rejected:
        out.unlink(missing_ok=True)
        return None
    width = len(table.header)
    if [header_key(h) for h in table.header[-3:]] == [header_key(c) for c in REJECT_COLUMNS]:
        width -= 3  # the input was a .rejected.csv: replace its line/column/reason
    with out.open("w", newline="", encoding="utf-8-sig" if table.bom else "utf-8") as f:
        writer = csv.writer(f, delimiter=table.delimiter)
        writer.writerow([*table.header[:width], *REJECT_COLUMNS])
        for r in rejected:
            cells = (r.cells + [""] * width)[:width]
            writer.writerow([*cells, r.line, r.column, r.reason])
    return out


# -- the summary --------------------------------------------------------------------------------------


def summary_lines(report: ImportReport, show_rejected: int = 20) -> list[str]:
    """What the CLI prints after an import."""
    c = report.counts
    lines = [f"Imported {report.kind} from {report.path.name}: {report.rows:,} rows."]
    for status in ("created", "updated", "unchanged", "stale", "rejected"):
        lines.append(f"  {status:<10}{c.get(status, 0):>8,}")
    if report.rejected:
        lines.append("")
        lines.append(f"Rejected rows (all of them are in {report.rejected_path}):" if report.rejected_path
                     else "Rejected rows:")
        for r in report.rejected[:show_rejected]:
            for column, reason in r.problems:
                lines.append(f"  line {r.line}" + (f", {column}" if column else "") + f": {reason}")
        if len(report.rejected) > show_rejected:
            lines.append(f"  … and {len(report.rejected) - show_rejected:,} more")
    if report.duplicates:
        lines.append("")
        lines.append("Possible duplicates" + (" (`dealbot merge KEEP_ID DROP_ID` merges two accounts):"
                                              if report.kind == "accounts" else ":"))
        for d in report.duplicates:
            others = ", ".join(f"{o['external_id']} \"{o['name']}\" ({o['reason']})" for o in d.others)
            lines.append(f"  line {d.line}: {d.key} \"{d.name}\" may duplicate {others}")
    return lines

"""Upserts from source systems: idempotent, ordered by `source_updated_at`, with change history.

One engine serves the REST API (single and bulk) and CSV import. Items are applied in chunks,
one transaction per chunk, with set-based SQL (a few queries per chunk, not per item). Each
item gets a result: created, updated, unchanged (same payload again: nothing written, no
history), stale (older than what is stored: ignored) or error (with the field named).

Every real change of an opportunity's stage, amount, close date, owner, status or team becomes
a history row, a timeline entry and an event row in the outbox, all in the same transaction, so
a crash between commit and the reaction (deal rooms) loses nothing.

The stored rows a chunk compares against are read ``FOR UPDATE`` (in id order, so two writers
cannot deadlock on them): on PostgreSQL the same change sent to two replicas at once is then
recorded once, the second writer seeing it as unchanged. SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import (
    Account,
    AuditLog,
    Base,
    Contact,
    DealTeamMember,
    Opportunity,
    OpportunityHistory,
    OutboxItem,
    TimelineEntry,
    User,
    utcnow,
)
from crm_store.outbox import Claimed
from crm_store.records import AccountRecord, ContactRecord, OpportunityRecord, Record, UserRecord, as_utc
from crm_store.store import Store

CHUNK = 1000
MAX_MERGE_CHAIN = 5
Status = Literal["created", "updated", "unchanged", "stale", "error"]
TRACKED = ("stage", "amount", "close_date", "owner_id", "status")
TIMELINE_KIND = {"stage": "stage_change", "amount": "amount_change", "close_date": "close_date_change",
                 "owner_id": "owner_change", "team": "team_change"}


@dataclass
class ItemResult:
    key: str
    status: Status
    error: dict[str, str] | None = None
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "status": self.status}
        if self.error:
            out["error"] = self.error
        if self.duplicates:
            out["possible_duplicates"] = self.duplicates
        return out


class ItemError(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass
class Who:
    """Who is writing, for the audit log: ``("api", "crm-connector")`` or ``("cli", "ops@…")``."""

    via: str
    actor: str


def _str(value: Any) -> str | None:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return None if value is None else str(value)


class Sync:
    def __init__(self, store: Store, who: Who) -> None:
        self.store = store
        self.who = who
        self._handover: list[Claimed] = []  # this chunk's events, leased to this process's worker

    async def upsert(self, kind: str, items: Sequence[tuple[str, Record]]) -> list[ItemResult]:
        """Apply `(key, record)` pairs of `kind`; one transaction per chunk of `CHUNK` items."""
        apply = {"users": self._users, "accounts": self._accounts, "contacts": self._contacts,
                 "opportunities": self._opportunities}[kind]
        results: list[ItemResult] = []
        for start in range(0, len(items), CHUNK):
            chunk = _last_wins(items[start : start + CHUNK])
            try:
                results += await self._commit(apply, chunk)
            except IntegrityError:
                # A constraint broke somewhere in the chunk (say, a Slack id already taken):
                # apply item by item so only the offending items fail, each with its reason.
                for item in chunk:
                    try:
                        results += await self._commit(apply, [item])
                    except IntegrityError as error:
                        results.append(ItemResult(item[0], "error", {"field": "", "message": _conflict(error)}))
        return results

    async def _commit(self, apply: Any, chunk: list[tuple[str, Record]]) -> list[ItemResult]:
        """Apply one chunk in one transaction; its change events go out through the outbox."""
        self._handover = []
        async with self.store.transaction() as s:
            results: list[ItemResult] = await apply(s, chunk)
        if self._handover:
            self.store.outbox.hand_over(self._handover)
        return results

    # -- users ------------------------------------------------------------------------------

    async def _users(self, s: AsyncSession, items: list[tuple[str, Record]]) -> list[ItemResult]:
        emails = {k for k, _ in items} | {r.manager_email for _, r in items if isinstance(r, UserRecord) and r.manager_email}
        known = {u.email: u for u in (await s.execute(
            select(User).where(User.email.in_(emails)).order_by(User.id).with_for_update())).scalars()}
        erased = {u.email for u in (await s.execute(
            select(User).where(User.email.in_([erased_email(k) for k, _ in items])))).scalars()}
        failing = _unresolvable_managers(items, known)
        results, created = [], []
        for key, rec in items:
            assert isinstance(rec, UserRecord)
            if key in failing:
                results.append(ItemResult(key, "error", {"field": "manager_email", "message": failing[key]}))
                continue
            if erased_email(key) in erased:
                results.append(ItemResult(key, "error", {"field": "email",
                                                         "message": "this user was erased and is not re-created"}))
                continue
            user = known.get(key)
            if user is None:
                user = User(email=key, name=rec.name, role=rec.role, time_zone=rec.time_zone,
                            slack_user_id=rec.slack_user_id, teams_aad_id=rec.teams_aad_id)
                s.add(user)
                known[key] = user
                created.append(key)
                results.append(ItemResult(key, "created"))
            elif user.erased_at is not None:
                results.append(ItemResult(key, "error", {"field": "email", "message": "this user was erased"}))
                continue
            else:
                changed = _assign(user, {"name": rec.name, "role": rec.role, "time_zone": rec.time_zone,
                                         "slack_user_id": rec.slack_user_id, "teams_aad_id": rec.teams_aad_id})
                results.append(ItemResult(key, "updated" if changed else "unchanged"))
        await s.flush()
        for result, (key, rec) in zip(results, items):
            assert isinstance(rec, UserRecord)
            if result.status == "error":
                continue
            user = known[key]
            manager_id = known[rec.manager_email].id if rec.manager_email else None
            if user.manager_id != manager_id:
                user.manager_id = manager_id
                if result.status == "unchanged":
                    result.status = "updated"
        await self._audit(s, "user", results)
        return results

    # -- accounts ---------------------------------------------------------------------------

    async def _accounts(self, s: AsyncSession, items: list[tuple[str, Record]]) -> list[ItemResult]:
        owners = await _users_by_email(s, {r.owner_email for _, r in items if isinstance(r, AccountRecord) and r.owner_email})
        existing = {a.external_id: a for a in (await s.execute(
            select(Account).where(Account.external_id.in_([k for k, _ in items]))
            .order_by(Account.id).with_for_update())).scalars()}
        index = await self.store.names.get("account")
        new_domains = {r.domain for k, r in items if isinstance(r, AccountRecord) and r.domain and k not in existing}
        by_domain: dict[str, list[Account]] = {}
        if new_domains:
            for row in (await s.execute(select(Account).where(Account.domain.in_(new_domains),
                                                              Account.merged_into_id.is_(None)))).scalars():
                by_domain.setdefault(row.domain or "", []).append(row)
        results = []
        earlier_names: dict[str, list[tuple[str, str]]] = {}  # accounts created earlier in this chunk
        earlier_domains: dict[str, list[tuple[str, str]]] = {}
        for key, rec in items:
            assert isinstance(rec, AccountRecord)
            try:
                owner_id = _ref(owners, rec.owner_email, "owner_email", "user") if rec.owner_email else None
            except ItemError as e:
                results.append(ItemResult(key, "error", {"field": e.field, "message": e.message}))
                continue
            values = {"name": rec.name, "domain": rec.domain, "industry": rec.industry, "owner_id": owner_id}
            acct = existing.get(key)
            if acct is None:
                s.add(Account(external_id=key, source_updated_at=as_utc(rec.source_updated_at), **values))
                result = ItemResult(key, "created")
                result.duplicates = await self._account_duplicates(s, index, rec, by_domain)
                rec_key = index.key(rec.name)
                seen = {ext for ext, _ in earlier_names.get(rec_key, [])}
                result.duplicates += [{"external_id": ext, "name": name, "reason": "same name"}
                                      for ext, name in earlier_names.get(rec_key, [])]
                result.duplicates += [{"external_id": ext, "name": name, "reason": "same domain"}
                                      for ext, name in earlier_domains.get(rec.domain or "", []) if ext not in seen]
                earlier_names.setdefault(rec_key, []).append((key, rec.name))
                if rec.domain:
                    earlier_domains.setdefault(rec.domain, []).append((key, rec.name))
            else:
                result = _update_existing(key, acct, values, rec.source_updated_at)
            results.append(result)
        await self._audit(s, "account", results)
        return results

    async def _account_duplicates(self, s: AsyncSession, index: Any, rec: AccountRecord,
                                  by_domain: dict[str, list[Account]]) -> list[dict[str, Any]]:
        ids = index.same_key(rec.name)
        found: dict[int, str] = {i: "same name" for i in ids}
        for same in by_domain.get(rec.domain or "", []) if rec.domain else []:
            found.setdefault(same.id, "same domain")
        if not found:
            return []
        rows = (await s.execute(select(Account.id, Account.external_id, Account.name)
                                .where(Account.id.in_(found), Account.merged_into_id.is_(None)))).all()
        return [{"external_id": ext, "name": name, "reason": found[i]} for i, ext, name in rows]

    # -- contacts ---------------------------------------------------------------------------

    async def _contacts(self, s: AsyncSession, items: list[tuple[str, Record]]) -> list[ItemResult]:
        accounts = await _accounts_by_external_id(s, {r.account_external_id for _, r in items if isinstance(r, ContactRecord)})
        existing = {c.external_id: c for c in (await s.execute(
            select(Contact).where(Contact.external_id.in_([k for k, _ in items]))
            .order_by(Contact.id).with_for_update())).scalars()}
        new_emails = {r.email for k, r in items if isinstance(r, ContactRecord) and r.email and k not in existing}
        same_email: dict[str, list[tuple[str, str]]] = {}
        if new_emails:
            rows = await s.execute(select(func.lower(Contact.email), Contact.external_id, Contact.name)
                                   .where(func.lower(Contact.email).in_(new_emails), Contact.erased_at.is_(None)))
            for email, ext, name in rows:
                same_email.setdefault(email, []).append((ext, name))
        results = []
        for key, rec in items:
            assert isinstance(rec, ContactRecord)
            try:
                account_id = _ref(accounts, rec.account_external_id, "account_external_id", "account")
            except ItemError as e:
                results.append(ItemResult(key, "error", {"field": e.field, "message": e.message}))
                continue
            values = {"name": rec.name, "email": rec.email, "title": rec.title, "phone": rec.phone, "account_id": account_id}
            contact = existing.get(key)
            if contact is None:
                s.add(Contact(external_id=key, source_updated_at=as_utc(rec.source_updated_at), **values))
                result = ItemResult(key, "created")
                result.duplicates = [{"external_id": ext, "name": name, "reason": "same email"}
                                     for ext, name in same_email.get(rec.email or "", [])]
            elif contact.erased_at is not None:
                result = ItemResult(key, "error", {"field": "external_id",
                                                   "message": "this contact was erased and is not re-created"})
            else:
                result = _update_existing(key, contact, values, rec.source_updated_at)
            results.append(result)
        await self._audit(s, "contact", results)
        return results

    # -- opportunities ----------------------------------------------------------------------

    async def _opportunities(self, s: AsyncSession, items: list[tuple[str, Record]]) -> list[ItemResult]:
        recs = [(k, r) for k, r in items if isinstance(r, OpportunityRecord)]
        accounts = await _accounts_by_external_id(s, {r.account_external_id for _, r in recs})
        users = await _users_by_email(s, {r.owner_email for _, r in recs} | {e for _, r in recs for e in r.team_emails})
        cols = [Opportunity.id, Opportunity.external_id, Opportunity.name, Opportunity.account_id, Opportunity.amount,
                Opportunity.currency, Opportunity.stage, Opportunity.probability, Opportunity.close_date,
                Opportunity.owner_id, Opportunity.status, Opportunity.source_updated_at]
        existing = {row.external_id: row for row in (await s.execute(
            select(*cols).where(Opportunity.external_id.in_([k for k, _ in recs]))
            .order_by(Opportunity.id).with_for_update())).mappings()}
        teams: dict[int, set[int]] = {}
        if existing:
            ids = [row.id for row in existing.values()]
            for opp_id, user_id in await s.execute(select(DealTeamMember.opportunity_id, DealTeamMember.user_id)
                                                   .where(DealTeamMember.opportunity_id.in_(ids))):
                teams.setdefault(opp_id, set()).add(user_id)
        now = utcnow()
        results: list[ItemResult] = []
        inserts: list[dict[str, Any]] = []
        insert_teams: dict[str, set[int]] = {}
        updates: list[dict[str, Any]] = []
        changes: list[tuple[int, str, Any, Any]] = []  # (opportunity id, field, old, new)
        team_add: list[dict[str, Any]] = []
        team_drop: list[tuple[int, int]] = []
        for key, rec in recs:
            try:
                values = {
                    "name": rec.name, "account_id": _ref(accounts, rec.account_external_id, "account_external_id", "account"),
                    "amount": rec.amount, "currency": rec.currency, "stage": rec.stage, "probability": rec.probability,
                    "close_date": rec.close_date, "owner_id": _ref(users, rec.owner_email, "owner_email", "user"),
                    "status": rec.status,
                }
                team = {_ref(users, e, "team_emails", "user") for e in rec.team_emails} - {values["owner_id"]}
            except ItemError as e:
                results.append(ItemResult(key, "error", {"field": e.field, "message": e.message}))
                continue
            source_at = as_utc(rec.source_updated_at)
            row = existing.get(key)
            if row is None:
                inserts.append({"external_id": key, **values, "source_updated_at": source_at,
                                "closed_at": now if rec.status != "open" else None, "created_at": now, "updated_at": now})
                insert_teams[key] = team
                results.append(ItemResult(key, "created"))
                continue
            stored_at = row["source_updated_at"]
            if stored_at is not None and source_at is not None and source_at < stored_at:
                results.append(ItemResult(key, "stale"))
                continue
            diff = {f: v for f, v in values.items() if row[f] != v}
            opp_id = row["id"]
            old_team = teams.get(opp_id, set())
            newer_source = source_at is not None and (stored_at is None or source_at > stored_at)
            if not diff and team == old_team:
                if newer_source:
                    updates.append({"id": opp_id, "source_updated_at": source_at})
                results.append(ItemResult(key, "unchanged"))
                continue
            update_row: dict[str, Any] = {"id": opp_id, **diff, "updated_at": now}
            if newer_source:
                update_row["source_updated_at"] = source_at
            if "status" in diff:
                update_row["closed_at"] = now if rec.status != "open" else None
            updates.append(update_row)
            changes += [(opp_id, f, row[f], diff[f]) for f in TRACKED if f in diff]
            if "name" in diff:  # no history entry, but deal rooms follow the name
                changes.append((opp_id, "renamed", row["name"], diff["name"]))
            if team != old_team:
                team_add += [{"opportunity_id": opp_id, "user_id": u, "added_at": now} for u in team - old_team]
                team_drop += [(opp_id, u) for u in old_team - team]
                changes.append((opp_id, "team", sorted(old_team), sorted(team)))
            results.append(ItemResult(key, "updated"))
        if inserts:
            table = _table(Opportunity)
            created = await s.execute(insert(table).returning(table.c.id, table.c.external_id), inserts)
            for opp_id, ext in created.all():
                team_add += [{"opportunity_id": opp_id, "user_id": u, "added_at": now} for u in insert_teams[ext]]
                changes.append((opp_id, "created", None, None))
        await _update_by_id(s, updates)
        for opp_id, user_id in team_drop:
            await s.execute(delete(DealTeamMember).where(DealTeamMember.opportunity_id == opp_id,
                                                         DealTeamMember.user_id == user_id))
        if team_add:
            await s.execute(insert(_table(DealTeamMember)), team_add)
        await self._record_changes(s, changes, now)
        await self._audit(s, "opportunity", results)
        return results

    async def _record_changes(self, s: AsyncSession, changes: list[tuple[int, str, Any, Any]], now: datetime) -> None:
        """History rows, timeline entries and one event per touched opportunity."""
        history, timeline = [], []
        events: dict[int, list[dict[str, Any]]] = {}
        people = await _names(s, changes)
        for opp_id, name, old, new in changes:
            old_s, new_s, field_name = _str(old), _str(new), name.removesuffix("_id")
            events.setdefault(opp_id, []).append({"field": name, "old": old_s, "new": new_s})
            if name in ("created", "renamed"):
                continue
            history.append({"opportunity_id": opp_id, "field": field_name, "old_value": old_s,
                            "new_value": new_s, "changed_at": now, "source": self.who.via})
            kind = TIMELINE_KIND.get(name) or ("reopened" if new == "open" else str(new))
            timeline.append({"opportunity_id": opp_id, "kind": kind,
                             "data": {"field": field_name, "old": old_s, "new": new_s},
                             "text": _describe(name, _named(old, people), _named(new, people)),
                             "occurred_at": now, "created_at": now})
        if history:
            await s.execute(insert(_table(OpportunityHistory)), history)
            await s.execute(insert(_table(TimelineEntry)), timeline)
        if events:
            table, lease = _table(OutboxItem), self.store.outbox.lease(now)
            payloads: dict[str, dict[str, Any]] = {
                f"event:opportunity.changed:{uuid.uuid4().hex}": {"opportunity_id": opp_id, "changes": fields}
                for opp_id, fields in events.items()}
            rows = [{"idempotency_key": key, "platform": "dealbot", "operation": "opportunity.changed",
                     "payload": payload, "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
                     **lease} for key, payload in payloads.items()]
            if not lease:  # no worker here (the CLI): a server's worker takes the rows at its next poll
                await s.execute(insert(table), rows)
                return
            written = await s.execute(insert(table).returning(table.c.id, table.c.idempotency_key), rows)
            self._handover = [Claimed(row_id, "dealbot", "opportunity.changed", payloads[key], 0, key)
                            for row_id, key in written]

    async def _audit(self, s: AsyncSession, entity: str, results: list[ItemResult]) -> None:
        """One audit row per write: the item itself, or for a chunk of several the keys it wrote."""
        written = [r for r in results if r.status in ("created", "updated")]
        if not written:
            return
        details = {status: [r.key for r in written if r.status == status] for status in ("created", "updated")}
        single = written[0].key if len(written) == 1 else None
        await s.execute(insert(_table(AuditLog)), [{
            "actor": self.who.actor, "via": self.who.via, "action": f"{entity}.upsert", "entity_type": entity,
            "entity_id": single, "at": utcnow(), "details": {k: v for k, v in details.items() if v},
        }])


def erased_email(email: str) -> str:
    """What an erased user's email becomes: a one-way digest, so the source cannot re-create the
    person by pushing the old address again, while the address itself is gone."""
    return f"erased-{hashlib.sha256(email.strip().lower().encode()).hexdigest()[:40]}@invalid"


def _unresolvable_managers(items: list[tuple[str, Record]], known: dict[str, User]) -> dict[str, str]:
    """Users whose manager is neither stored nor arriving (successfully) in the same chunk."""
    managers = {k: r.manager_email for k, r in items if isinstance(r, UserRecord) and r.manager_email}
    erased = {email for email, u in known.items() if u.erased_at is not None}
    failing: dict[str, str] = {}
    changed = True
    while changed:  # a failing manager makes their reports fail too
        changed = False
        for key, manager in managers.items():
            if key in failing:
                continue
            if manager in failing or manager in erased or (manager not in known and manager not in managers
                                                               and manager not in {k for k, _ in items}):
                failing[key] = f"no user with email {manager}" if manager not in failing else \
                    f"the manager {manager} could not be saved"
                changed = True
    return failing


async def _update_by_id(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Core executemany UPDATEs by primary key, one statement per set of changed columns."""
    table = _table(Opportunity)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append({f"v_{k}": v for k, v in row.items()})
    for columns, params in groups.items():
        values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in columns if c != "id"}
        await s.execute(update(table).where(table.c.id == bindparam("v_id")).values(values), params)


def _table(model: type[Base]) -> Table:
    """The Core table of a model, for bulk statements that need no ORM bookkeeping."""
    return cast(Table, model.__table__)


def _last_wins(items: Sequence[tuple[str, Record]]) -> list[tuple[str, Record]]:
    """One item per key in a chunk: a repeated key within one request keeps its last version."""
    return list({key: (key, rec) for key, rec in items}.values())


def _conflict(error: IntegrityError) -> str:
    text = str(error.orig).lower()
    for column in ("slack_user_id", "teams_aad_id", "email", "external_id"):
        if column in text:
            return f"{column} is already used by another record"
    return "conflicts with an existing record"


def _ref(table: dict[str, int], key: str, field_name: str, what: str) -> int:
    if key not in table:
        raise ItemError(field_name, f"no {what} {key!r}")
    return table[key]


async def _users_by_email(s: AsyncSession, emails: set[str]) -> dict[str, int]:
    if not emails:
        return {}
    rows = await s.execute(select(User.email, User.id).where(User.email.in_(emails), User.erased_at.is_(None)))
    return {email: user_id for email, user_id in rows}


async def _accounts_by_external_id(s: AsyncSession, keys: set[str]) -> dict[str, int]:
    """Account ids by external id; a merged-away account resolves to the account it went into,
    so a source system that still sends the old id does not undo the merge."""
    if not keys:
        return {}
    rows = (await s.execute(select(Account.external_id, Account.id, Account.merged_into_id)
                            .where(Account.external_id.in_(keys)))).all()
    merged_into: dict[int, int] = {acct_id: merged for _, acct_id, merged in rows if merged is not None}
    pending = set(merged_into.values())
    for _ in range(MAX_MERGE_CHAIN):  # an account merged into one that was itself merged later
        if not pending:
            break
        query = select(Account.id, Account.merged_into_id).where(Account.id.in_(pending),
                                                                 Account.merged_into_id.is_not(None))
        further = {acct_id: merged for acct_id, merged in await s.execute(query) if merged is not None}
        if not further:
            break
        merged_into.update(further)
        pending = set(further.values())

    def live(acct_id: int) -> int:
        for _ in range(MAX_MERGE_CHAIN + 1):
            if acct_id not in merged_into:
                break
            acct_id = merged_into[acct_id]
        return acct_id

    return {ext: live(acct_id) for ext, acct_id, _ in rows}


def _update_existing(key: str, row: Any, values: dict[str, Any], source_at: datetime | None) -> ItemResult:
    """Apply `values` to a stored ORM row unless the source version is older than the stored one."""
    incoming = as_utc(source_at)
    if row.source_updated_at is not None and incoming is not None and incoming < row.source_updated_at:
        return ItemResult(key, "stale")
    changed = _assign(row, values)
    if incoming is not None and (row.source_updated_at is None or incoming > row.source_updated_at):
        row.source_updated_at = incoming
    return ItemResult(key, "updated" if changed else "unchanged")


def _differs(old: Any, new: Any) -> bool:
    return bool(old != new)  # Decimals compare by value: 100000.00 == 100000


def _assign(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if _differs(getattr(row, name), value):
            setattr(row, name, value)
            changed = True
    return changed


async def _names(s: AsyncSession, changes: list[tuple[int, str, Any, Any]]) -> dict[int, str]:
    ids: set[int] = set()
    for _, name, old, new in changes:
        if name == "owner_id":
            ids |= {old, new} - {None}
        elif name == "team":
            ids |= set(old) | set(new)
    if not ids:
        return {}
    rows = await s.execute(select(User.id, User.name).where(User.id.in_(ids)))
    return {user_id: name for user_id, name in rows}


def _named(value: Any, people: dict[int, str]) -> Any:
    if isinstance(value, list):
        return ", ".join(people.get(v, "?") for v in value) or "nobody"
    return people.get(value, value) if isinstance(value, int) and not isinstance(value, bool) else value


def _describe(name: str, old: Any, new: Any) -> str:
    if name == "status":
        return {"won": "Deal won", "lost": "Deal lost"}.get(str(new), f"Deal reopened (was {old})")
    label = {"owner_id": "Owner", "close_date": "Close date", "team": "Deal team"}.get(name, name.capitalize())
    if name == "amount":
        old, new = (f"{Decimal(v):,.2f}" if v is not None else None for v in (old, new))
    return f"{label}: {_str(old) if old is not None else '—'} → {_str(new) if new is not None else '—'}"

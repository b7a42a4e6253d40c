"""Deliberate, audited data operations: erasure of personal data, account merges, duplicate scans.

Erasure keeps the rows (anonymised), so pipelines, counts and timelines still add up.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from crm_store.models import Account, AuditLog, Contact, Opportunity, TimelineEntry, TranscriptMessage, User, utcnow
from crm_store.store import Store
from crm_store.sync import Who, erased_email


class NotFound(LookupError):
    pass


async def erase_contact(store: Store, external_id: str, who: Who) -> bool:
    """Erase a contact's personal data; False when it was already erased."""
    async with store.transaction() as s:
        contact = (await s.execute(select(Contact).where(Contact.external_id == external_id))).scalar_one_or_none()
        if contact is None:
            raise NotFound(external_id)
        if contact.erased_at is not None:
            return False
        contact.name, contact.email, contact.phone, contact.title = "Erased contact", None, None, None
        contact.erased_at = utcnow()
        s.add(AuditLog(actor=who.actor, via=who.via, action="contact.erase", entity_type="contact", entity_id=external_id))
    return True


async def erase_user(store: Store, email: str, who: Who) -> bool:
    """Erase a user's personal data, their name in timeline texts and the transcript text they
    wrote; False when already done."""
    async with store.transaction() as s:
        user = (await s.execute(select(User).where(User.email.in_([email.lower(), erased_email(email)])))).scalar_one_or_none()
        if user is None:
            raise NotFound(email)
        if user.erased_at is not None:
            return False
        old_name, anonymous = user.name, f"Erased user {user.id}"
        user.name, user.email = anonymous, erased_email(email)
        user.slack_user_id = user.teams_aad_id = user.time_zone = None
        user.erased_at = utcnow()
        await s.execute(update(TranscriptMessage).where(TranscriptMessage.author_id == user.id)
                        .values(text=None, previous_versions=None, purged_at=utcnow()))
        # Owner and team changes name people in their text ("Owner: Rita Rep → Ben Rep").
        await s.execute(update(TimelineEntry)
                        .where(TimelineEntry.kind.in_(["owner_change", "team_change"]),
                               TimelineEntry.text.contains(old_name, autoescape=True))
                        .values(text=func.replace(TimelineEntry.text, old_name, anonymous)))
        s.add(AuditLog(actor=who.actor, via=who.via, action="user.erase", entity_type="user", entity_id=str(user.id)))
    return True


async def merge_accounts(store: Store, keep: str, drop: str, who: Who) -> dict[str, int]:
    """Move contacts and opportunities (with their timelines) from `drop` to `keep`."""
    if keep == drop:
        raise ValueError("an account cannot be merged into itself")
    async with store.transaction() as s:
        rows = {a.external_id: a for a in (await s.execute(
            select(Account).where(Account.external_id.in_([keep, drop])))).scalars()}
        for key in (keep, drop):
            if key not in rows:
                raise NotFound(key)
        kept, dropped = rows[keep], rows[drop]
        if dropped.merged_into_id is not None or kept.merged_into_id is not None:
            raise ValueError("one of these accounts was already merged")
        contacts = len((await s.execute(update(Contact).where(Contact.account_id == dropped.id)
                                        .values(account_id=kept.id, updated_at=utcnow()).returning(Contact.id))).all())
        deals = len((await s.execute(update(Opportunity).where(Opportunity.account_id == dropped.id)
                                     .values(account_id=kept.id, updated_at=utcnow()).returning(Opportunity.id))).all())
        dropped.merged_into_id = kept.id
        moved = {"contacts": contacts, "opportunities": deals}
        s.add(AuditLog(actor=who.actor, via=who.via, action="account.merge", entity_type="account",
                       entity_id=keep, details={"dropped": drop, **moved}))
    return moved


@dataclass(frozen=True)
class DuplicatePair:
    keep: str
    keep_name: str
    other: str
    other_name: str
    score: float


async def duplicate_accounts(store: Store, min_score: float = 90) -> list[DuplicatePair]:
    """Pairs of live accounts whose names match at `min_score` or more once legal suffixes are gone."""
    index = await store.names.get("account")
    async with store.session() as s:
        rows = (await s.execute(select(Account.id, Account.external_id, Account.name)
                                .where(Account.merged_into_id.is_(None)))).all()
    by_id = {r.id: r for r in rows}
    pairs: dict[tuple[int, int], DuplicatePair] = {}
    for row in rows:
        for match in index.search(row.name, limit=5, k=50):
            other = by_id.get(match.id)
            if other is None or other.id == row.id or match.score < min_score:
                continue
            a, b = sorted((row, other), key=lambda r: r.id)
            pairs.setdefault((a.id, b.id), DuplicatePair(a.external_id, a.name, b.external_id, b.name, round(match.score, 1)))
    return sorted(pairs.values(), key=lambda p: (-p.score, p.keep))

"""A small, fully known organisation for behaviour tests.

    admin (Ada)                      loner (Lou, no manager)
    vp (Victor)
    ├── mgr1 (Mona) ── rep_a (Rita), rep_b (Ben)
    └── mgr2 (Max)  ── rep_c (Cara), se (Sam: on the deal team of Rita's ACME renewal)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import func, select

from crm_store import Store
from crm_store.models import Account, Base, Contact, DealTeamMember, Opportunity, User

PEOPLE = {
    "admin": ("Ada Admin", "admin", None),
    "vp": ("Victor Vance", "manager", None),
    "mgr1": ("Mona Manager", "manager", "vp"),
    "mgr2": ("Max Other", "manager", "vp"),
    "rep_a": ("Rita Rep", "rep", "mgr1"),
    "rep_b": ("Ben Rep", "rep", "mgr1"),
    "rep_c": ("Cara Rep", "rep", "mgr2"),
    "se": ("Sam Engineer", "rep", "mgr2"),
    "loner": ("Lou Loner", "rep", None),
}
ACCOUNTS = {
    "acme": "ACME Corporation, Inc.",
    "globex": "Globex Corporation",
    "initech": "Initech LLC",
    "umbrella": "Umbrella Pharma AG",
    "societe": "Société Générale des Eaux",
}
# key: (name, account, owner, amount, currency, stage, close in days, status, team)
DEALS = {
    "acme_renewal": ("ACME Renewal 2027", "acme", "rep_a", "250000", "USD", "Negotiation", 3, "open", ["se"]),
    "acme_pilot": ("ACME Pilot", "acme", "rep_b", "40000", "USD", "Discovery", 40, "open", []),
    "globex_expansion": ("Globex Expansion", "globex", "rep_c", "120000", "EUR", "Proposal", 60, "open", []),
    "initech_secret": ("Initech Secret Project", "initech", "loner", "500000", "USD", "Commit", 10, "open", []),
    "umbrella_platform": ("Umbrella Platform Deal", "umbrella", "rep_a", "90000", "USD", "Closed Won", -20, "won", []),
    "societe_eaux": ("Société Eaux Migration", "societe", "rep_a", "75000", "EUR", "Proposal", 5, "open", []),
}
CONTACTS = {
    "coyote": ("Wile E. Coyote", "acme", "Head of Procurement"),
    "scorpio": ("Hank Scorpio", "globex", "CEO"),
    "gibbons": ("Peter Gibbons", "initech", "Engineer"),
}
DOMAIN = "org.test"


@dataclass
class Org:
    users: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    deals: dict[str, int] = field(default_factory=dict)
    contacts: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def email(who: str) -> str:
        return f"{who.replace('_', '.')}@{DOMAIN}"

    @staticmethod
    def deal_name(key: str) -> str:
        return DEALS[key][0]


def utc_today() -> date:
    """The dispatcher's notion of today (UTC), so date-dependent tests agree with it."""
    return datetime.now(timezone.utc).date()


async def build_org(store: Store, today: date | None = None) -> Org:
    today = today or utc_today()
    org = Org()
    async with store.transaction() as s:
        for key, (name, role, manager) in PEOPLE.items():
            user = User(email=Org.email(key), name=name, role=role, time_zone="Europe/Berlin",
                        manager_id=org.users[manager] if manager else None)
            s.add(user)
            await s.flush()
            org.users[key] = user.id
        for key, name in ACCOUNTS.items():
            account = Account(external_id=f"A-{key}", name=name, industry="Software", domain=f"{key}.example")
            s.add(account)
            await s.flush()
            org.accounts[key] = account.id
        for key, (name, acct, title) in CONTACTS.items():
            contact = Contact(external_id=f"C-{key}", name=name, account_id=org.accounts[acct], title=title,
                              email=f"{key}@{acct}.example")
            s.add(contact)
            await s.flush()
            org.contacts[key] = contact.id
        for key, (name, acct, owner, amount, cur, stage, days, status, team) in DEALS.items():
            opp = Opportunity(external_id=f"O-{key}", name=name, account_id=org.accounts[acct],
                              owner_id=org.users[owner], amount=Decimal(amount), currency=cur, stage=stage,
                              close_date=today + timedelta(days=days), status=status)
            s.add(opp)
            await s.flush()
            org.deals[key] = opp.id
            for member in team:
                s.add(DealTeamMember(opportunity_id=opp.id, user_id=org.users[member], role="SE"))
    return org


async def snapshot(store: Store) -> dict[str, object]:
    """Row counts of every table plus the newest change, to prove that nothing was written."""
    counts: dict[str, object] = dict(await store.counts())
    async with store.session() as s:
        for table in Base.metadata.sorted_tables:
            if "updated_at" in table.c:
                counts[f"{table.name}.updated_at"] = (await s.execute(select(func.max(table.c.updated_at)))).scalar()
    return counts

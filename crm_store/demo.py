"""A realistic sample organisation so a newcomer can try every command at once.

About 50 users in a manager hierarchy across time zones, 2,000 accounts, 5,000 contacts,
3,000 opportunities across stages, currencies and close dates, deal teams and some history.
Seeded, so every run (and the README's transcript) shows the same company.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from sqlalchemy import insert, text

from crm_store.models import Account, Contact, DealTeamMember, Opportunity, TimelineEntry, User
from crm_store.sample_names import company_name, deal_name, person_name
from crm_store.stages import DEFAULT_STAGES
from crm_store.store import Store

DOMAIN = "example.com"
REGIONS = {
    "Americas": ["America/New_York", "America/Chicago", "America/Los_Angeles"],
    "EMEA": ["Europe/London", "Europe/Berlin", "Europe/Paris"],
    "APAC": ["Asia/Tokyo", "Asia/Singapore", "Australia/Sydney"],
}
INDUSTRIES = ["Software", "Manufacturing", "Healthcare", "Financial Services", "Retail", "Logistics",
              "Energy", "Education", "Media", "Telecommunications"]
TITLES = ["CFO", "CTO", "VP Procurement", "Head of IT", "Director of Operations", "CEO", "Legal Counsel",
          "IT Manager", "Buyer", "VP Engineering", "Security Officer", None]
NOTES = ["Intro call went well; they want a pilot for the EMEA team.", "Sent the revised quote with the multi-year discount.",
         "Security questionnaire returned, two open items on SSO.", "Champion is moving to a new role next quarter.",
         "Procurement asked for net-60 payment terms.", "Demo for the CFO booked for next Tuesday.",
         "Competitor is offering a steeper first-year discount.", "Legal reviewing our DPA redlines."]


@dataclass(frozen=True)
class DemoPeople:
    rep: str
    manager: str
    admin: str


# The people the shell introduces; their deals are there to be found.
FEATURED = DemoPeople(rep=f"maya.patel@{DOMAIN}", manager=f"daniel.kim@{DOMAIN}", admin=f"alex.rivera@{DOMAIN}")
FEATURED_ACCOUNTS = ["ACME Corporation, Inc.", "Acme Logistics GmbH", "Acme Health Partners", "Globex Corporation",
                     "Initech LLC", "Umbrella Pharma AG", "Société Générale des Eaux", "Northwind Traders Ltd"]


def _email(name: str, used: set[str]) -> str:
    base = name.lower().replace("'", "").replace(" ", ".")
    base = base.encode("ascii", "ignore").decode() or "user"
    email, n = f"{base}@{DOMAIN}", 2
    while email in used:
        email, n = f"{base}{n}@{DOMAIN}", n + 1
    used.add(email)
    return email


def _users(rng: random.Random) -> list[dict]:
    used: set[str] = set()
    rows: list[dict] = []

    def add(name: str, role: str, manager: int | None, tz: str, email: str | None = None) -> int:
        email = email or _email(name, used)
        used.add(email)
        rows.append({"id": len(rows) + 1, "email": email, "name": name, "role": role, "manager_id": manager,
                     "time_zone": tz})
        return len(rows)

    add("Alex Rivera", "admin", None, "America/New_York", FEATURED.admin)
    cro = add("Grace Okafor", "manager", None, "America/New_York")
    first_lines: list[tuple[int, str]] = []
    for region, zones in REGIONS.items():
        vp = add(person_name(rng), "manager", cro, zones[0])
        for i in range(3 if region == "Americas" else 2):
            if region == "Americas" and i == 0:
                mgr = add("Daniel Kim", "manager", vp, zones[0], FEATURED.manager)
            else:
                mgr = add(person_name(rng), "manager", vp, zones[i % len(zones)])
            first_lines.append((mgr, zones[i % len(zones)]))
    while len(rows) < 50:
        mgr, tz = first_lines[(len(rows) - 1) % len(first_lines)]
        if mgr == first_lines[0][0] and not any(r["email"] == FEATURED.rep for r in rows):
            add("Maya Patel", "rep", mgr, tz, FEATURED.rep)
        else:
            add(person_name(rng), "rep", mgr, tz)
    return rows


def build(seed: int = 7, today: date | None = None) -> dict[str, list[dict]]:
    """Rows for every demo table, ready for bulk insert."""
    rng = random.Random(seed)
    today = today or date.today()
    now = datetime.now(timezone.utc)
    users = _users(rng)
    sellers = [u for u in users if u["role"] == "rep"]
    maya = next(u for u in users if u["email"] == FEATURED.rep)

    names = list(FEATURED_ACCOUNTS)
    seen = {n.lower() for n in names}
    while len(names) < 2000:
        n = company_name(rng)
        if n.lower() not in seen:
            seen.add(n.lower())
            names.append(n)
    accounts = []
    for i, name in enumerate(names, 1):
        slug = "".join(ch for ch in name.split()[0].lower() if ch.isalnum()) or f"acct{i}"
        accounts.append({"id": i, "external_id": f"ACC-{i:05d}", "name": name, "domain": f"{slug}{i}.example",
                         "industry": rng.choice(INDUSTRIES), "owner_id": rng.choice(sellers)["id"]})

    contacts = []
    for i in range(1, 5001):
        acct = accounts[(i - 1) % len(accounts)] if i <= len(accounts) else rng.choice(accounts)
        name = person_name(rng)
        contacts.append({"id": i, "external_id": f"CON-{i:05d}", "account_id": acct["id"], "name": name,
                         "email": f"{name.lower().replace(' ', '.').replace(chr(39), '')}@{acct['domain']}",
                         "title": rng.choice(TITLES), "phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"})

    stages = list(DEFAULT_STAGES)
    opps, team, timeline = [], [], []
    for i in range(1, 3001):
        acct = accounts[(i - 1) % 8] if i <= 16 else rng.choice(accounts)
        owner = maya if i <= 6 else rng.choice(sellers)
        status = "open" if i <= 16 else rng.choices(["open", "won", "lost"], weights=[80, 12, 8])[0]
        amount = Decimal(int(min(2_500_000, max(5_000, rng.lognormvariate(10.9, 1.0)))) // 500 * 500)
        close = today + timedelta(days=rng.randint(-45, 200) if status == "open" else rng.randint(-300, -1))
        opps.append({"id": i, "external_id": f"OPP-{i:05d}", "name": deal_name(rng, acct["name"], close.year + 1),
                     "account_id": acct["id"], "amount": amount,
                     "currency": rng.choices(["USD", "EUR", "GBP"], weights=[80, 12, 8])[0],
                     "stage": rng.choice(stages) if status == "open" else ("Closed Won" if status == "won" else "Closed Lost"),
                     "close_date": close, "owner_id": owner["id"], "status": status})
        if rng.random() < 0.3:
            for member in rng.sample([u for u in sellers if u["id"] != owner["id"]], rng.randint(1, 3)):
                team.append({"opportunity_id": i, "user_id": member["id"], "role": rng.choice(["SE", "CSM", "Partner"])})
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            when = datetime.combine(today - timedelta(days=rng.randint(0, 60)), time(rng.randint(8, 18)), timezone.utc)
            timeline.append({"opportunity_id": i, "kind": "note", "text": rng.choice(NOTES),
                             "author_id": owner["id"], "occurred_at": min(when, now), "data": {"via": "demo"}})
    return {"users": users, "accounts": accounts, "contacts": contacts, "opportunities": opps,
            "deal_team_members": team, "timeline_entries": timeline}


async def load(store: Store, seed: int = 7, today: date | None = None) -> dict[str, int]:
    """Insert the demo organisation into an empty store; returns row counts per table."""
    rows = build(seed, today)
    models = {"users": User, "accounts": Account, "contacts": Contact, "opportunities": Opportunity,
              "deal_team_members": DealTeamMember, "timeline_entries": TimelineEntry}
    async with store.transaction() as s:
        for table, model in models.items():
            for start in range(0, len(rows[table]), 1000):
                await s.execute(insert(model), rows[table][start : start + 1000])
        if store.dialect == "postgresql":  # explicit ids do not advance PostgreSQL's sequences
            for table in ("users", "accounts", "contacts", "opportunities"):
                await s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    return {table: len(r) for table, r in rows.items()}

"""Realistic, reproducible company, deal and person names for the demo and the benchmarks.

Real tenants mix dictionary words ("Northwind Logistics") with invented brands ("Zentrix"),
legal suffixes in every spelling and the odd accent, so the generator does too.
"""

from __future__ import annotations

import random

WORDS = """acme global north south east west pacific atlantic summit pioneer apex vertex quantum
nova stellar blue green red silver golden iron stone river lake ocean harbor bay valley mountain
pine oak cedar maple birch willow eagle falcon hawk lion tiger bear wolf fox orion atlas titan
zenith horizon frontier liberty union national united american european asian metro urban
capital prime first premier royal crown empire sterling heritage legacy vision insight bright
clear true smart rapid swift agile nimble solid core central digital cyber data cloud net web
logic micro macro info tech systems solutions services logistics dynamics industries holdings
partners group ventures labs works networks software analytics consulting media health care
medical pharma bio energy power solar wind motors automotive aerospace marine foods farms
brands retail supply trading finance capital bank insurance realty properties construction
engineering design studios education learning security defense telecom wireless mobile robotics
materials chemicals plastics steel paper packaging textiles apparel beverages hospitality travel""".split()

SUFFIXES = ["Inc.", "Inc", "Corp.", "Corporation", "LLC", "Ltd", "Limited", "GmbH", "AG", "S.A.", "PLC", "Co.", ""]
ACCENTED = ["Müller", "Société", "Nordström", "Café", "Ångström", "Zürich", "São", "Łódź", "Île", "Crème"]
SYLLABLES = "ka ri zen tor vex lum qua dro nix bel mar sol tek vyn cor pha ly ra zo xi tri ver gal mon dex pra kel ion".split()
FIRST = """James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard
Susan Joseph Jessica Thomas Sarah Charles Karen Maya Priya Wei Yuki Ahmed Fatima Lars Ingrid Jose
Lucia Pierre Amelie Giovanni Sofia Olga Dmitri Kwame Amara Noah Emma Liam Olivia Mateo Chloe Hiro
Aiko Ravi Ananya Sven Freya Diego Valentina Omar Leila Jonas Hanna Tomasz Zofia""".split()
LAST = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Patel
Kim Nguyen Chen Wang Tanaka Sato Müller Schmidt Fischer Dubois Moreau Rossi Russo Silva Santos
Kowalski Nowak Andersson Johansson Hansen Larsen Okafor Mensah Haddad Cohen Ivanov Petrova
O'Brien Murphy Kelly Walsh Novak Horvat Costa Ferreira""".split()
DEAL_KINDS = ["Renewal", "Expansion", "New Logo", "Upsell", "Platform Migration", "Pilot",
              "Enterprise License", "Support Upgrade", "Seats", "Data Add-on", "Multi-year"]


def brand(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def company_name(rng: random.Random) -> str:
    n_words = rng.choices([1, 2, 3], weights=[2, 5, 3])[0]
    words = [w.capitalize() for w in rng.sample(WORDS, n_words)]
    if rng.random() < 0.45:
        words[rng.randrange(len(words))] = brand(rng)
    if rng.random() < 0.03:
        words.insert(0, rng.choice(ACCENTED))
    suffix = rng.choice(SUFFIXES)
    return " ".join(words) + (f" {suffix}" if suffix else "")


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def deal_name(rng: random.Random, account: str, year: int) -> str:
    kind = rng.choice(DEAL_KINDS)
    short = account.split()[0]
    if kind == "Seats":
        return f"{short} – {rng.choice([50, 100, 250, 500, 1000])} seats"
    return f"{short} {kind} {year}"


def typo(rng: random.Random, text: str, edits: int = 1) -> str:
    """Apply `edits` random keyboard-style edits (swap, drop, double, replace)."""
    chars = list(text)
    for _ in range(edits):
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if len(letters) < 4:
            break
        i = rng.choice(letters[1:-1])
        op = rng.choice(["swap", "drop", "double", "replace"])
        if op == "swap" and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == "drop":
            del chars[i]
        elif op == "double":
            chars.insert(i, chars[i])
        else:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def noisy_query(rng: random.Random, name: str) -> str:
    """A query a hurried rep might type for `name`: typos, dropped suffix, reordered or cut words."""
    words = name.replace(",", "").split()
    if len(words) > 1 and words[-1].strip(".").lower() in {"inc", "corp", "llc", "ltd", "gmbh", "ag", "plc", "co", "sa", "s.a", "limited", "corporation"}:
        words = words[:-1]
    roll = rng.random()
    if roll < 0.15 and len(words) > 1:
        words.reverse()
    elif roll < 0.30 and len(words[-1]) > 4:
        words[-1] = words[-1][: max(3, len(words[-1]) - 3)]
    query = " ".join(words).lower()
    return typo(rng, query, edits=1 if len(query) < 10 else rng.choice([1, 1, 2]))

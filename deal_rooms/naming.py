"""Readable, valid, unique channel names: ``deal-<account>-<deal>`` by default.

Accents are transliterated (anyascii: "Société Générale" -> "societe-generale"), emoji and
symbols dropped, legal suffixes of the account left out, and a deal name that repeats the
account is not said twice. When a name is taken the next candidate adds a short suffix derived
from the opportunity id, so every retry walks the same sequence.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

from anyascii import anyascii

from crm_store.name_index import normalize
from deal_rooms.port import NameRules

DEFAULT_TEMPLATE = "deal-{account}-{deal}"
FALLBACK = "deal"
_DROPPED_CATEGORIES = {"So", "Sk", "Cs", "Co", "Cn", "Cf", "Mn", "Me"}  # emoji, symbols, marks, formats


def slug(text: str, rules: NameRules) -> str:
    """`text` as a name fragment: plain letters and digits joined by dashes."""
    kept = "".join(c for c in unicodedata.normalize("NFC", text) if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    plain = anyascii(kept)
    if rules.lowercase:
        plain = plain.lower()
    return rules.disallowed.sub("-", plain).strip("-_")


def room_name(template: str, account: str, deal: str, rules: NameRules) -> str:
    """The preferred name of a deal's room (without any uniqueness suffix)."""
    account_part = slug(normalize(account), rules) or slug(account, rules)
    deal_part = slug(deal, rules)
    if account_part and deal_part.startswith(account_part + "-"):
        deal_part = deal_part[len(account_part) + 1:]  # "ACME" + "ACME Renewal" -> acme-renewal
    name = template.format(account=account_part, deal=deal_part)
    name = rules.disallowed.sub("-", name.lower() if rules.lowercase else name)
    name = "-".join(part for part in name.split("-") if part)  # no doubled or dangling dashes
    return _cut(name, rules.max_len) or FALLBACK


def candidates(base: str, opportunity_id: int, rules: NameRules) -> Iterator[str]:
    """`base`, then `base` with a short suffix, then numbered: the names to try in order."""
    yield _cut(base, rules.max_len)
    tag = _base36(opportunity_id)
    for n in range(1, 1000):
        suffix = f"-{tag}" if n == 1 else f"-{tag}-{n}"
        yield _cut(base, rules.max_len - len(suffix)) + suffix


def _cut(name: str, max_len: int) -> str:
    if len(name) <= max_len:
        return name
    cut = name[:max_len]
    if "-" in cut[max_len // 2:]:
        cut = cut[: cut.rindex("-")]  # end at a word boundary when one is near
    return cut.rstrip("-_")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out

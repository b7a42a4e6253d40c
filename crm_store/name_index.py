"""The fuzzy name index: typo-tolerant lookup that stays fast at a million names.

A full rapidfuzz WRatio scan over 1M names takes over a second, so lookups go in two steps:

1. *Candidates* from a character-trigram inverted index: every query trigram's posting list is
   counted with one ``numpy.bincount``; the names sharing the most trigrams (shorter names first
   on ties, as WRatio favours them) are the candidates. Trigrams are taken per word, padded, so
   word order does not matter and a typo spoils at most three of them.
2. *Re-ranking* of those few hundred candidates with rapidfuzz's WRatio, the same scorer a
   brute-force scan would use, plus tiers for exact and prefix matches.

Names are normalised first: accents transliterated, punctuation dropped, lower-cased, and for
company-like names legal suffixes removed, so "acme corp" finds "ACME Corporation, Inc.".
The index lives in memory and is owned by a `Store`, which keeps it fresh from the database.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from rapidfuzz import fuzz, process

LEGAL_SUFFIXES = frozenset(
    """inc incorporated corp corporation co company llc llp lp ltd limited plc gmbh ag kg mbh
    sa sas sarl srl spa bv nv oy ab as aps pty pte kk gk the""".split()
)
_NON_WORD = re.compile(r"[\W_]+")
_INITIAL_DOT = re.compile(r"\b(\w)\.")  # "S.A." -> "SA", but "acme.com" stays two words
_SPECIAL = str.maketrans({"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "ł": "l", "đ": "d", "þ": "th", "&": " and "})


def normalize(name: str, *, strip_suffixes: bool = True) -> str:
    """Lower-case words without accents or punctuation, legal suffixes removed when asked.

    Letters of any script are kept ("東京" stays searchable); only accents are folded away.
    """
    folded = unicodedata.normalize("NFKD", _INITIAL_DOT.sub(r"\1", name.lower().translate(_SPECIAL)))
    bare = "".join(ch for ch in folded if not unicodedata.combining(ch))
    words = _NON_WORD.sub(" ", bare).split()
    if strip_suffixes:
        kept = [w for w in words if w not in LEGAL_SUFFIXES]
        words = kept or words
    return " ".join(words)


def trigrams(key: str) -> set[str]:
    """Padded trigrams of each word, plus each word's sorted letters.

    The sorted-letters gram survives a transposition ("amce" for "acme"), which in a short word
    breaks every trigram.
    """
    grams: set[str] = set()
    for word in key.split():
        padded = f" {word} "
        grams.update(padded[i : i + 3] for i in range(len(padded) - 2))
        if len(word) > 2:
            grams.add("#" + "".join(sorted(word)))
    return grams


@dataclass(frozen=True, slots=True)
class Match:
    """A scored candidate; `score` is WRatio 0-100 and `tier` says how the name matched:
    4 exact, 3 the name starts with the query, 2 every query word starts a word of the name,
    1 fuzzy only. Exact and prefix matches rank first, whatever their score."""

    id: int
    key: str
    tier: int
    score: float

    @property
    def rank(self) -> tuple[int, float]:
        return (self.tier, self.score)


def tier_of(query: str, key: str) -> int:
    if key == query:
        return 4
    if key.startswith(query):
        return 3
    words = key.split()
    if all(any(w.startswith(q) for w in words) for q in query.split()):
        return 2
    return 1


def _top(score: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the `k` best scores, best first."""
    k = min(k, len(score))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-score, k - 1)[:k]
    return top[np.argsort(-score[top], kind="stable")]


class NameIndex:
    """Trigram index over one kind of name (accounts, contacts or opportunities)."""

    def __init__(self, *, strip_suffixes: bool = True) -> None:
        self.strip_suffixes = strip_suffixes
        self._keys: list[str | None] = []
        self._ids = array("q")
        self._pos: dict[int, int] = {}
        self._postings: dict[str, array] = {}
        self._lengths = array("i")
        self._lengths_np: np.ndarray | None = None
        self._by_key: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._pos)

    def add(self, row_id: int, name: str) -> None:
        """Add or replace the name of `row_id`."""
        key = normalize(name, strip_suffixes=self.strip_suffixes)
        self._lengths_np = None  # release the numpy view so the array may grow
        old = self._pos.get(row_id)
        if old is not None:
            if self._keys[old] == key:
                return
            self._forget(row_id, old)  # the slot's postings go stale; candidates are re-checked
        pos = len(self._keys)
        self._keys.append(key)
        self._ids.append(row_id)
        self._pos[row_id] = pos
        self._by_key.setdefault(key, set()).add(row_id)
        grams = trigrams(key)
        self._lengths.append(len(grams))
        postings = self._postings
        for gram in grams:
            plist = postings.get(gram)
            if plist is None:
                postings[gram] = plist = array("i")
            plist.append(pos)

    def add_many(self, rows: Iterable[tuple[int, str]]) -> None:
        for row_id, name in rows:
            self.add(row_id, name)

    def remove(self, row_id: int) -> None:
        pos = self._pos.pop(row_id, None)
        if pos is not None:
            self._forget(row_id, pos)

    def _forget(self, row_id: int, pos: int) -> None:
        key = self._keys[pos]
        self._keys[pos] = None
        if key is not None:
            same = self._by_key.get(key)
            if same is not None:
                same.discard(row_id)
                if not same:
                    del self._by_key[key]

    def same_key(self, name: str) -> set[int]:
        """Ids whose normalised name equals that of `name` (suffix, case and accent variants)."""
        return set(self._by_key.get(self.key(name), ()))

    def key(self, name: str) -> str:
        return normalize(name, strip_suffixes=self.strip_suffixes)

    def candidates(self, query: str, k: int) -> list[int]:
        """Row ids of up to `k` names sharing the most trigrams with `query`, best first."""
        qkey = self.key(query)
        grams = [g for g in trigrams(qkey) if g in self._postings]
        if not grams:
            return []
        lists = [np.frombuffer(self._postings[g], dtype=np.int32) for g in grams]
        hits = np.bincount(np.concatenate(lists), minlength=len(self._keys))
        if self._lengths_np is None:
            self._lengths_np = np.frombuffer(self._lengths, dtype=np.int32)
        where = np.flatnonzero(hits)
        shared = hits[where]
        lengths = self._lengths_np[where]
        # Names covering most of the query (most shared trigrams, then fewest extra ones)...
        covering = shared * 1024 - np.minimum(lengths, 1023)
        # ...and names mostly contained in the query, which WRatio's partial and token-set
        # scoring rewards ("partners" for "cloud partners").
        contained = (shared * 1024) // lengths + shared
        found = where[np.concatenate([_top(covering, k), _top(contained, k // 2)])]
        keys, ids = self._keys, self._ids
        seen: set[int] = set()
        out: list[int] = []
        for p in found.tolist():
            if p not in seen and keys[p] is not None:
                seen.add(p)
                out.append(ids[p])
        return out

    def rank(self, query: str, ids: Iterable[int], limit: int) -> list[Match]:
        """Re-rank candidate `ids` against `query` with WRatio and exact/prefix tiers."""
        qkey = self.key(query)
        if not qkey:
            return []
        choices = {}
        for row_id in ids:
            pos = self._pos.get(row_id)
            if pos is not None and self._keys[pos] is not None:
                choices[row_id] = self._keys[pos]
        scored = process.extract(qkey, choices, scorer=fuzz.WRatio, limit=None, score_cutoff=1)
        matches = [Match(row_id, key, tier_of(qkey, key), score) for key, score, row_id in scored]
        matches.sort(key=lambda m: m.rank, reverse=True)
        return matches[:limit]

    def search(self, query: str, limit: int = 10, k: int = 400) -> list[Match]:
        return self.rank(query, self.candidates(query, k), limit)

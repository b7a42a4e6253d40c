"""The trigram name index on its own: normalisation, candidates, re-ranking, updates."""

from __future__ import annotations

import random

from rapidfuzz import fuzz, process

from crm_store.name_index import NameIndex, normalize
from crm_store.sample_names import company_name, noisy_query


def test_normalize_folds_case_accents_punctuation_and_legal_suffixes() -> None:
    assert normalize("ACME Corporation, Inc.") == "acme"
    assert normalize("Société Générale S.A.") == "societe generale"
    assert normalize("Müller & Söhne GmbH") == "muller and sohne"
    assert normalize("株式会社 東京") == "株式会社 東京"
    assert normalize("Inc.") == "inc"  # a name made only of a suffix keeps it
    assert normalize("Co-op Farms", strip_suffixes=False) == "co op farms"


def test_add_replace_remove() -> None:
    index = NameIndex()
    index.add(1, "Globex Corporation")
    index.add(2, "Initech")
    assert index.search("globex")[0].id == 1
    index.add(1, "Hooli")
    assert [m.id for m in index.search("globex") if m.score > 80] == []
    assert index.search("hooli")[0].id == 1
    index.remove(1)
    assert index.search("hooli") == [] and len(index) == 1


def test_empty_or_symbol_only_queries_find_nothing() -> None:
    index = NameIndex()
    index.add(1, "Acme")
    assert index.search("") == [] and index.search("!!! ??") == []


def test_agrees_with_a_brute_force_scan_on_typos() -> None:
    """A regression floor for candidate recall; the benchmark measures it at 1M names."""
    rng = random.Random(3)
    names = list({company_name(rng) for _ in range(20_000)})
    index = NameIndex()
    index.add_many(enumerate(names))
    keys = [normalize(n) for n in names]
    queries = [noisy_query(rng, rng.choice(names)) for _ in range(100)]
    agree = 0
    for q in queries:
        best = process.extractOne(normalize(q), keys, scorer=fuzz.WRatio)
        ours = index.search(q, limit=1)
        agree += bool(ours) and fuzz.WRatio(normalize(q), ours[0].key) >= best[1] - 1e-9
    assert agree >= 93

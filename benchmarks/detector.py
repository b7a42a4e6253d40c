"""Benchmark: quality and speed of the offline decision / action-item detector (transcripts.detect).

Run from the repository root with the project's virtualenv::

    python benchmarks/detector.py                       # tests/fixtures/labelled/decisions_dev.jsonl
    python benchmarks/detector.py --data other.jsonl --errors --rounds 7

It reads the labelled deal-room messages (one JSON object per line: ``text``, ``label`` in
decision | action_item | none, ``why``) and:

1. classifies every message with ``detect()`` (explicit markers first, then the rules) and prints
   precision, recall and F1 for *decision* and *action_item*, and the confusion matrix;
2. does the same, in the same run, for a naive keyword baseline ("decid|agreed|approved" is a
   decision, else "can you|please|pls|todo" is an action item), to show what the rules add;
3. times ``detect()`` over the whole file: messages/s as the median of ``--rounds`` rounds
   (each round classifies every message ``--repeat`` times) and the median / p99 time of a
   single call. The target is well under 0.2 ms per message (the pipeline must keep up with
   at least 500 messages/s end to end).

With ``--errors`` it also lists the misclassified messages with the cue that fired. The dev file
is the data the rules were developed against, so its figures are optimistic; the fresh
sentences in tests/test_detector.py check the rules on text they were not written for.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transcripts.detect import detect  # noqa: E402

LABELS = ("decision", "action_item", "none")
DEFAULT_DATA = ROOT / "tests" / "fixtures" / "labelled" / "decisions_dev.jsonl"  # a copy of ../shared/data's

_BASE_DECISION = re.compile(r"decid|agreed|approved", re.IGNORECASE)
_BASE_ACTION = re.compile(r"can you|please|pls|todo", re.IGNORECASE)


def baseline(text: str) -> str:
    """The naive keyword classifier the rules have to beat."""
    if _BASE_DECISION.search(text):
        return "decision"
    if _BASE_ACTION.search(text):
        return "action_item"
    return "none"


def ours(text: str) -> str:
    found = detect(text)
    return found.kind if found is not None else "none"


def scores(gold: list[str], predicted: list[str], label: str) -> tuple[float, float, float]:
    hits = sum(1 for g, p in zip(gold, predicted) if g == p == label)
    said = predicted.count(label)
    truth = gold.count(label)
    precision = hits / said if said else 0.0
    recall = hits / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def report(name: str, gold: list[str], predicted: list[str]) -> None:
    print(f"\n{name}")
    print(f"  {'class':<13}{'precision':>10}{'recall':>10}{'F1':>10}")
    for label in ("decision", "action_item"):
        p, r, f = scores(gold, predicted, label)
        print(f"  {label:<13}{p:>10.3f}{r:>10.3f}{f:>10.3f}")
    accuracy = sum(1 for g, p in zip(gold, predicted) if g == p) / len(gold)
    print(f"  accuracy over all three labels: {accuracy:.3f}")
    matrix = Counter(zip(gold, predicted))
    print(f"  confusion (rows: label, columns: predicted)\n  {'':<13}" + "".join(f"{lab:>13}" for lab in LABELS))
    for g in LABELS:
        print(f"  {g:<13}" + "".join(f"{matrix[g, p]:>13}" for p in LABELS))


def throughput(classify: Callable[[str], object], texts: list[str], rounds: int,
               repeat: int) -> tuple[float, float, float]:
    """Median messages/s over the rounds, and the median / p99 microseconds of one call."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            for text in texts:
                classify(text)
        rates.append(len(texts) * repeat / (time.perf_counter() - start))
    calls = []
    for text in texts:
        start = time.perf_counter_ns()
        classify(text)
        calls.append((time.perf_counter_ns() - start) / 1000)
    calls.sort()
    return statistics.median(rates), statistics.median(calls), calls[min(len(calls) - 1, int(len(calls) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description="Decision / action-item detector: quality and speed")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled JSONL file")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (the median is reported)")
    parser.add_argument("--repeat", type=int, default=20, help="passes over the file per timing round")
    parser.add_argument("--errors", action="store_true", help="list the misclassified messages")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row["text"] for row in rows]
    gold = [row["label"] for row in rows]
    counts = Counter(gold)
    print(f"{len(rows)} labelled messages from {args.data}: "
          + ", ".join(f"{counts[label]} {label}" for label in LABELS))

    predicted = [ours(text) for text in texts]
    report("detector (transcripts.detect.detect)", gold, predicted)
    report("baseline (keywords: decid|agreed|approved -> decision; can you|please|pls|todo -> action_item)",
           gold, [baseline(text) for text in texts])

    rate, p50, p99 = throughput(detect, texts, args.rounds, args.repeat)
    base_rate, _, _ = throughput(baseline, texts, args.rounds, args.repeat)
    print(f"\nthroughput of detect(): {rate:,.0f} messages/s (median of {args.rounds} rounds x {args.repeat} passes), "
          f"one call p50 {p50:.0f} µs, p99 {p99:.0f} µs; baseline {base_rate:,.0f} messages/s")
    verdict = "PASS" if p50 < 200 and rate >= 500 else "FAIL"
    print(f"{verdict}: median call {p50:.0f} µs (target well under 200 µs), {rate:,.0f} messages/s (target >= 500)")

    if args.errors:
        wrong = [(text, g, p) for text, g, p in zip(texts, gold, predicted) if g != p]
        print(f"\nmisclassified: {len(wrong) or 'none'}")
        for text, g, p in wrong:
            found = detect(text)
            print(f"  label {g:<11} predicted {p:<11} {text[:100]!r}  [{found.reason if found else ''}]")


if __name__ == "__main__":
    main()

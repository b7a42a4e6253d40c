"""Sales stages: their order and default win probability (for weighted pipeline).

A source CRM may send its own probability per deal; it wins over these defaults. Stages this
table does not know sort after the known ones and weigh 0 unless the deal carries a probability.
"""

from __future__ import annotations

DEFAULT_STAGES: dict[str, int] = {
    "Prospecting": 10,
    "Qualification": 20,
    "Discovery": 30,
    "Proposal": 50,
    "Negotiation": 75,
    "Commit": 90,
}


def _canon(stage: str) -> str:
    return stage.strip().lower()


_ORDER = {_canon(s): i for i, s in enumerate(DEFAULT_STAGES)}
_PROB = {_canon(s): p for s, p in DEFAULT_STAGES.items()}


def stage_order(stage: str) -> tuple[int, str]:
    return (_ORDER.get(_canon(stage), len(_ORDER)), stage)


def probability(stage: str, explicit: int | None) -> int:
    if explicit is not None:
        return max(0, min(100, explicit))
    return _PROB.get(_canon(stage), 0)

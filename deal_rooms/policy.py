"""Which opportunities get a room: open, big enough in their own currency, at a chosen stage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from crm_store.models import DealStatus, Opportunity


@dataclass(frozen=True)
class RoomPolicy:
    min_amount: Decimal = Decimal(100_000)
    min_amounts: Mapping[str, Decimal] = field(default_factory=dict)  # per currency, wins over min_amount
    stages: frozenset[str] = frozenset()  # lower-cased; empty: every open stage

    @classmethod
    def of(cls, min_amount: Decimal, min_amounts: Mapping[str, Decimal], stages: Iterable[str]) -> RoomPolicy:
        return cls(min_amount, {c.upper(): a for c, a in min_amounts.items()},
                   frozenset(s.strip().lower() for s in stages if s.strip()))

    def threshold(self, currency: str) -> Decimal:
        return self.min_amounts.get(currency.upper(), self.min_amount)

    def qualifies(self, opportunity: Opportunity) -> bool:
        return (opportunity.status == DealStatus.open.value
                and opportunity.amount >= self.threshold(opportunity.currency)
                and (not self.stages or opportunity.stage.strip().lower() in self.stages))

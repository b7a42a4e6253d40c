"""Change events handed from the sync engine to whoever reacts (deal rooms), after commit.

The durable record is the outbox row written in the same transaction as the change; this hub
only tells reactors in this process at once. A reactor that misses an event (crash, another
replica) finds it in the outbox, so handlers must be idempotent — which every reaction is,
since each one is a claim in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dealbot.events")


@dataclass(frozen=True, slots=True)
class OpportunityChanged:
    outbox_id: int
    opportunity_id: int
    changes: tuple[dict[str, Any], ...]

    @property
    def created(self) -> bool:
        return any(c["field"] == "created" for c in self.changes)


Listener = Callable[[OpportunityChanged], Awaitable[None]]


class ChangeHub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, events: list[OpportunityChanged]) -> None:
        """Call every listener for every event; one failing listener does not stop the others."""
        for event in events:
            for listener in self._listeners:
                try:
                    await listener(event)
                except Exception:  # the outbox still holds the event; log and carry on
                    log.exception("change listener failed", extra={"opportunity_id": event.opportunity_id})

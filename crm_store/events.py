"""Change events from the sync engine to whoever reacts (deal rooms), delivered by the outbox.

The sync writes an ``opportunity.changed`` outbox row in the same transaction as the change and
wakes the outbox; the outbox worker hands the row to this hub, which calls every listener. A
crash anywhere in between leaves the row pending, so the event is delivered again: listeners
must be idempotent — which every reaction is, since each one is a claim in the database.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from crm_store.outbox import Claimed, Queued, Retry

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


def timeline_changed(opportunity_id: int, kind: str) -> Queued:
    """The event for an entry written outside the sync (a note, a captured decision), so the
    deal's room refreshes its pinned card. Queue it in the transaction that writes the entry."""
    return Queued("dealbot", "opportunity.changed", f"event:opportunity.changed:{uuid.uuid4().hex}",
                  {"opportunity_id": opportunity_id, "changes": [{"field": "timeline", "kind": kind}]})


class ChangeHub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def deliver(self, item: Claimed) -> None:
        """The outbox handler: call every listener; if any failed, the row is retried (for all)."""
        event = OpportunityChanged(item.id, item.payload["opportunity_id"], tuple(item.payload["changes"]))
        failed = 0
        for listener in self._listeners:
            try:
                await listener(event)
            except Exception:  # one failing listener does not keep the event from the others
                failed += 1
                log.exception("change listener failed", extra={"opportunity_id": event.opportunity_id})
        if failed:
            raise Retry(f"{failed} of {len(self._listeners)} change listeners failed")

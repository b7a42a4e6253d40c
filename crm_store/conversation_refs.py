"""Where a platform says the bot can reach someone later: Teams conversation references.

A Teams bot cannot message a person or a team out of the blue; it needs the reference (service
URL, tenant, conversation id) the platform sent when the app was installed or the person wrote.
Adapters remember the latest per user (1:1 chat, by AAD id) and per team; digests, capture
suggestions and deal rooms look them up. One row per (platform, scope, key); the last write wins.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select, update

from crm_store import Store
from crm_store.engine import insert_unless_present
from crm_store.models import ConversationRef, utcnow

Scope = Literal["user", "team"]


async def remember(store: Store, platform: str, scope: Scope, key: str, reference: dict[str, Any]) -> None:
    async with store.transaction(renames=False) as s:
        row = {"platform": platform, "scope": scope, "key": key, "reference": reference, "updated_at": utcnow()}
        inserted = (await s.execute(insert_unless_present(s, ConversationRef, [row]).returning(ConversationRef.id))
                    ).scalar_one_or_none()
        if inserted is None:
            await s.execute(update(ConversationRef).where(
                ConversationRef.platform == platform, ConversationRef.scope == scope, ConversationRef.key == key,
            ).values(reference=reference, updated_at=utcnow()))


async def reference(store: Store, platform: str, scope: Scope, key: str) -> dict[str, Any] | None:
    async with store.session() as s:
        return (await s.execute(select(ConversationRef.reference).where(
            ConversationRef.platform == platform, ConversationRef.scope == scope, ConversationRef.key == key,
        ))).scalar_one_or_none()


async def any_reference(store: Store, platform: str, scope: Scope) -> dict[str, Any] | None:
    """The most recent reference of that scope (a team's, for its service URL and tenant)."""
    async with store.session() as s:
        return (await s.execute(select(ConversationRef.reference).where(
            ConversationRef.platform == platform, ConversationRef.scope == scope,
        ).order_by(ConversationRef.updated_at.desc()).limit(1))).scalar_one_or_none()

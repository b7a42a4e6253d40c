"""Slack event payloads -> the platform-neutral objects of `crm_store.chat_events`.

Only translation: which subtypes are human speech, where the text of an edit or a deletion
lives, how a ts becomes a time. None means "nothing Dealbot records" (a topic change, a join
message, another bot unless bot capture is on).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from crm_store.chat_events import AppRemoved, ChatEvent, ChatMessage, MemberJoined, ReactionChanged

HUMAN_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message"}


def _time(ts: str) -> datetime:
    return datetime.fromtimestamp(float(ts), tz=timezone.utc)


def _files(message: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f.get("permalink") or f.get("url_private") or f.get("name", "") for f in message.get("files") or [])


def _thread(message: dict[str, Any]) -> str | None:
    thread = message.get("thread_ts")
    return thread if thread and thread != message.get("ts") else None


def permalink(workspace_url: str, channel: str, ts: str, thread: str | None = None) -> str:
    """Slack's link to a message (what chat.getPermalink answers, without a call per message)."""
    link = f"{workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
    return f"{link}?thread_ts={thread}&cid={channel}" if thread else link


def translate(body: dict[str, Any], *, capture_bots: bool) -> ChatEvent | None:
    event: dict[str, Any] = body.get("event") or {}
    event_id = str(body.get("event_id") or "")
    kind = event.get("type")
    if not event_id:
        return None
    if kind == "message":
        return _message(event_id, event, capture_bots)
    if kind in ("reaction_added", "reaction_removed"):
        item = event.get("item") or {}
        if item.get("type") != "message":
            return None
        return ReactionChanged("slack", event_id, item["channel"], item["ts"], event["user"], event["reaction"],
                               added=kind == "reaction_added")
    if kind == "member_joined_channel":
        return MemberJoined("slack", event_id, event["channel"], event["user"])
    if kind in ("app_uninstalled", "tokens_revoked"):
        return AppRemoved("slack", event_id, str(body.get("team_id") or ""), kind)
    return None


def _message(event_id: str, event: dict[str, Any], capture_bots: bool) -> ChatMessage | None:
    subtype = event.get("subtype")
    channel = event.get("channel", "")
    if subtype == "message_changed":
        message, before = event.get("message") or {}, event.get("previous_message") or {}
        if message.get("text") == before.get("text"):
            return None  # an unfurl or a reaction count changed, not the words
        return _human(event_id, channel, message, capture_bots, change="edited", previous=before.get("text"))
    if subtype == "message_deleted":
        before = event.get("previous_message") or {}
        return _human(event_id, channel, {**before, "ts": event.get("deleted_ts", before.get("ts"))}, capture_bots,
                      change="deleted", previous=before.get("text"))
    if subtype not in HUMAN_SUBTYPES and subtype != "bot_message":
        return None
    return _human(event_id, channel, event, capture_bots)


def _human(event_id: str, channel: str, message: dict[str, Any], capture_bots: bool, *,
           change: Literal["new", "edited", "deleted"] = "new", previous: str | None = None) -> ChatMessage | None:
    from_bot = bool(message.get("bot_id")) or message.get("subtype") == "bot_message"
    user = message.get("user") or message.get("bot_id") or ""
    if (from_bot and not capture_bots) or not message.get("ts") or (not user and change != "deleted"):
        return None  # a deletion names the message; who wrote it may be missing (old messages)
    return ChatMessage(
        platform="slack", event_id=event_id, channel_id=channel, message_id=message["ts"], user_id=user,
        text=message.get("text") or "", sent_at=_time(message["ts"]), thread_id=_thread(message),
        change=change, previous_text=previous, files=_files(message), from_bot=from_bot,
    )

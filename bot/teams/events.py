"""Teams activities -> the platform-neutral objects of `crm_store.chat_events`.

Only translation: which activities are people speaking in a channel (Teams delivers every
channel message to the app through the ``ChannelMessage.Read.Group`` resource-specific consent),
where edits and deletions are (``messageUpdate`` / ``messageDelete``), how a message links back.
None means "nothing Dealbot records". The event id makes each delivery's claim: Teams reuses the
message id for its edits, so an edit's id carries the edit's time too.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from botbuilder.schema import Activity

from crm_store.chat_events import ChatMessage

TAG = re.compile(r"<[^>]+>")
BREAK = re.compile(r"<br\s*/?>|</p>|</div>", re.IGNORECASE)
MESSAGE_LINK = "https://teams.microsoft.com/l/message/{channel}/{message}"


def plain(text: str | None) -> str:
    """Teams sends formatted messages as HTML: keep the words and the line breaks."""
    if not text:
        return ""
    if "<" in text:
        text = TAG.sub("", BREAK.sub("\n", text))
    return html.unescape(text).strip()


def channel_data(activity: Activity) -> dict[str, Any]:
    return activity.channel_data if isinstance(activity.channel_data, dict) else {}


def channel_of(activity: Activity) -> str | None:
    """The Teams channel (``19:…@thread.tacv2``) a channel activity happened in."""
    data = channel_data(activity)
    return (data.get("channel") or {}).get("id") or data.get("teamsChannelId")


def thread_of(activity: Activity) -> str | None:
    """The thread's root message, for a reply (Teams puts it in the conversation id)."""
    conversation = activity.conversation.id if activity.conversation else ""
    _, sep, root = conversation.partition(";messageid=")
    return root if sep and root != activity.id else None


def link(activity: Activity, channel: str, message_id: str) -> str:
    data = channel_data(activity)
    query = {"tenantId": (data.get("tenant") or {}).get("id"), "groupId": (data.get("team") or {}).get("aadGroupId"),
             "parentMessageId": thread_of(activity) or message_id}
    url = MESSAGE_LINK.format(channel=quote(channel, safe=""), message=quote(message_id, safe=""))
    return f"{url}?{urlencode({k: v for k, v in query.items() if v})}"


def _time(activity: Activity) -> datetime:
    when = activity.timestamp or datetime.now(timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def translate(activity: Activity, *, capture_bots: bool) -> ChatMessage | None:
    channel = channel_of(activity)
    if channel is None or not activity.id or (activity.conversation and activity.conversation.conversation_type
                                              not in (None, "channel")):
        return None
    sender = activity.from_property
    from_bot = bool(sender and (sender.role == "bot" or (sender.id or "").startswith("28:")))
    if from_bot and not capture_bots:
        return None
    event = (channel_data(activity).get("eventType") or "").lower()
    if activity.type == "messageDelete" or event == "softdeletemessage":
        change, event_id = "deleted", f"delete:{activity.id}"
    elif activity.type == "messageUpdate" or event == "editmessage":
        change, event_id = "edited", f"edit:{activity.id}:{_time(activity).isoformat()}"
    elif activity.type == "message":
        change, event_id = "new", f"message:{activity.id}"
    else:
        return None
    user = (sender.id if sender else "") or ""
    if not user and change != "deleted":
        return None
    files = tuple(str(a.content_url) for a in activity.attachments or []
                  if a.content_url and not (a.content_type or "").startswith("application/vnd.microsoft.card"))
    return ChatMessage(
        platform="teams", event_id=event_id, channel_id=channel, message_id=activity.id, user_id=user,
        text=plain(activity.text), sent_at=_time(activity), thread_id=thread_of(activity), change=change,  # type: ignore[arg-type]
        files=files, from_bot=from_bot, permalink=link(activity, channel, activity.id),
    )

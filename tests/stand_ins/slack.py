"""A local stand-in for Slack's Web API, so tests drive the real slack-sdk and slack-bolt over HTTP.

It keeps state (users, channels, messages, views, files) and enforces Slack's documented rules:
channel name rules and ``name_taken``, membership (``not_in_channel``, ``already_in_channel``),
archived channels, Block Kit limits, single-use trigger ids, response_url use limits, auth, and
rate limits answered with HTTP 429 + ``Retry-After``. A bug that Slack would refuse fails the test.
It also speaks Socket Mode: ``apps.connections.open`` (app-level token only) hands out a
WebSocket URL, which greets with ``hello``; `socket_send` pushes an envelope and `socket_acks`
records the app's acknowledgement of each.
Only Slack is replaced; Dealbot's own code runs for real.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import asyncio
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

PERMALINK_HOST = "https://standin.slack.test"
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 40_000
_NAME_CHARS = re.compile(r"^[a-z0-9_-]+$")
# Arguments Slack takes as JSON; form requests carry them as JSON strings.
_JSON_ARGS = ("blocks", "attachments", "view", "files", "metadata")
_BLOCK_TYPES = frozenset(
    {"section", "header", "actions", "context", "divider", "image", "input", "rich_text", "video",
     "file", "markdown"}
)
_OPTION_LIMITS = {"static_select": 100, "multi_static_select": 100, "overflow": 5,
                  "radio_buttons": 10, "checkboxes": 10}


@dataclass
class Call:
    """One Web API call as the stand-in answered it, so tests can assert on the traffic."""

    method: str
    args: dict[str, Any]
    status: int
    ok: bool
    error: str | None


@dataclass
class Channel:
    """A conversation: public or private channel, or an IM (``is_im``)."""

    id: str
    name: str
    is_private: bool = False
    is_archived: bool = False
    is_im: bool = False
    members: set[str] = field(default_factory=set)
    topic: str = ""
    purpose: str = ""
    created: int = 0
    creator: str = ""


@dataclass
class Message:
    """A message in a channel; ``bot_id`` is set for messages the bot posted."""

    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    bot_id: str | None = None
    pinned: bool = False
    deleted: bool = False
    edited: bool = False
    files: list[str] = field(default_factory=list)


class _Refusal(Exception):
    """Raised by a method to answer ``{"ok": false, "error": ...}`` (plus ``extra`` fields)."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


def sign(body: bytes | str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with a request: X-Slack-Request-Timestamp and X-Slack-Signature (v0 HMAC-SHA256 of f"v0:{ts}:{body}")."""
    ts = int(time.time()) if timestamp is None else timestamp
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), b"v0:%d:" % ts + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


# ---------------------------------------------------------------------------------------------
# argument helpers and Block Kit rules


def _page(args: dict[str, Any], items: list[Any]) -> tuple[list[Any], str]:
    """One page of `items` for Slack's cursor paging (``limit`` 1..1000), and the next cursor."""
    try:
        limit = min(max(int(args.get("limit") or 100), 1), 1000)
        cursor = str(args.get("cursor") or "")
        offset = int(base64.b64decode(cursor).decode().removeprefix("offset:")) if cursor else 0
    except ValueError:
        raise _Refusal("invalid_cursor") from None
    end = offset + limit
    return items[offset:end], base64.b64encode(f"offset:{end}".encode()).decode() if end < len(items) else ""


def _flag(value: Any) -> bool:
    """Slack booleans arrive as true/false, "true"/"false" or "1"/"0" (slack-sdk sends 1/0)."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def _ids(value: Any) -> list[str]:
    """A list of ids from a comma-separated string (form) or a JSON array."""
    items = [str(v) for v in value] if isinstance(value, list) else str(value or "").split(",")
    return [item.strip() for item in items if item.strip()]


def _name_error(name: str) -> str | None:
    """Slack's channel name rules: lowercase letters, digits, hyphens, underscores; at most 80."""
    if not name:
        return "invalid_name_required"
    if len(name) > 80:
        return "invalid_name_maxlength"
    if not _NAME_CHARS.match(name):
        return "invalid_name_specials"
    if not name.strip("-_"):
        return "invalid_name_punctuation"
    return None


def _text_problems(obj: Any, where: str, max_len: int, *, plain_only: bool = False) -> list[str]:
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return [f"{where}: must be a text object"]
    if obj.get("type") not in kinds:
        return [f"{where}: type must be one of {', '.join(kinds)}"]
    if not obj["text"]:
        return [f"{where}: must be at least 1 character"]
    if len(obj["text"]) > max_len:
        return [f"{where}: must be at most {max_len} characters"]
    return []


def _element_problems(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"{where}: must be an element object"]
    problems: list[str] = []
    if len(str(element.get("action_id", ""))) > 255:
        problems.append(f"{where}/action_id: must be at most 255 characters")
    kind = element["type"]
    if kind == "button":
        problems += _text_problems(element.get("text"), f"{where}/text", 75, plain_only=True)
        if len(str(element.get("value", ""))) > 2000:
            problems.append(f"{where}/value: must be at most 2000 characters")
        if len(str(element.get("url", ""))) > 3000:
            problems.append(f"{where}/url: must be at most 3000 characters")
        if element.get("style", "primary") not in ("primary", "danger"):
            problems.append(f"{where}/style: must be primary or danger")
    elif kind in _OPTION_LIMITS and "option_groups" not in element:
        options = element.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= _OPTION_LIMITS[kind]:
            problems.append(f"{where}/options: must provide 1 to {_OPTION_LIMITS[kind]} items")
        else:
            for i, option in enumerate(options):
                text = option.get("text") if isinstance(option, dict) else None
                problems += _text_problems(text, f"{where}/options/{i}/text", 75)
                if not isinstance(option, dict) or not 1 <= len(str(option.get("value", ""))) <= 150:
                    problems.append(f"{where}/options/{i}/value: must be 1 to 150 characters")
    return problems


def _block_problems(blocks: list[Any], max_blocks: int) -> list[str]:
    """What Slack would reject in a list of blocks (empty when it would accept them)."""
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"/blocks: must provide at most {max_blocks} items")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            problems.append(f"{where}: unsupported block type")
            continue
        if "block_id" in block:
            block_id = str(block["block_id"])
            if len(block_id) > 255:
                problems.append(f"{where}/block_id: must be at most 255 characters")
            if block_id in block_ids:
                problems.append(f"{where}/block_id: duplicate block_id {block_id!r}")
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: must provide text or fields")
            if "text" in block:
                problems += _text_problems(block["text"], f"{where}/text", 3000)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                problems.append(f"{where}/fields: must provide at most 10 items")
            else:
                for j, item in enumerate(fields):
                    problems += _text_problems(item, f"{where}/fields/{j}", 2000)
            if "accessory" in block:
                problems += _element_problems(block["accessory"], f"{where}/accessory")
        elif kind == "header":
            problems += _text_problems(block.get("text"), f"{where}/text", 150, plain_only=True)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                problems.append(f"{where}/elements: must provide 1 to 25 items")
                continue
            action_ids = [e.get("action_id") for e in elements if isinstance(e, dict) and e.get("action_id")]
            if len(action_ids) != len(set(action_ids)):
                problems.append(f"{where}/elements: action_id must be unique within the block")
            for j, element in enumerate(elements):
                problems += _element_problems(element, f"{where}/elements/{j}")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}/elements: must provide 1 to 10 items")
                continue
            for j, element in enumerate(elements):
                if not (isinstance(element, dict) and element.get("type") == "image"):
                    problems += _text_problems(element, f"{where}/elements/{j}", 3000)
        elif kind == "image":
            if not block.get("image_url") and not block.get("slack_file"):
                problems.append(f"{where}: must provide image_url or slack_file")
            if not 1 <= len(str(block.get("alt_text", ""))) <= 2000:
                problems.append(f"{where}/alt_text: must be 1 to 2000 characters")
        elif kind == "input":
            problems += _text_problems(block.get("label"), f"{where}/label", 2000, plain_only=True)
            problems += _element_problems(block.get("element"), f"{where}/element")
        elif kind == "markdown" and not 1 <= len(str(block.get("text", ""))) <= 12_000:
            problems.append(f"{where}/text: must be 1 to 12000 characters")
    return problems


def _view_problems(view: dict[str, Any]) -> list[str]:
    """What Slack would reject in a modal view payload."""
    problems: list[str] = []
    if view.get("type") != "modal":
        problems.append("/view/type: must be modal")
    problems += _text_problems(view.get("title"), "/view/title", 24, plain_only=True)
    for key in ("submit", "close"):
        if key in view:
            problems += _text_problems(view[key], f"/view/{key}", 24, plain_only=True)
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.append("/view/blocks: must be an array")
    else:
        problems += [f"/view{p}" for p in _block_problems(blocks, MAX_VIEW_BLOCKS)]
        has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        if has_input and "submit" not in view:
            problems.append("/view/submit: required when the view has input blocks")
    for key, limit in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        if len(str(view.get(key, ""))) > limit:
            problems.append(f"/view/{key}: must be at most {limit} characters")
    return problems


def _details(problems: list[str]) -> dict[str, Any]:
    """Slack explains invalid_blocks / invalid_arguments in response_metadata.messages."""
    return {"response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]}}


# ---------------------------------------------------------------------------------------------


class SlackStandIn:
    """A local, stateful Slack Web API that the real slack-sdk and slack-bolt can run against."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-1-test",
        team_id: str = "T0TEST",
        bot_user_id: str = "U0BOT",
        rate_limits: dict[str, int] | None = None,
        rate_window_s: float = 1.0,
        retry_after_s: int = 1,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = "B0BOT"
        self.app_id = "A0APP"
        self.rate_limits: dict[str, int] = dict(rate_limits or {})  # calls allowed per window, by method
        self.rate_window_s = rate_window_s
        self.retry_after_s = retry_after_s
        self.trigger_lifetime_s = 3.0
        self.response_url_uses = 5
        self.response_url_lifetime_s = 30 * 60.0
        self.calls: list[Call] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, list[Message]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self._auth_error: str | None = None
        self._failures: dict[str, deque[tuple[str, int]]] = {}
        self._recent: dict[str, deque[float]] = {}
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()
        self._response_issued: dict[str, float] = {}
        self._response_used: dict[str, int] = {}
        self._counter = itertools.count(1)
        self._last_ts_us = 0
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._tickets: set[str] = set()
        self.socket_acks: dict[str, dict[str, Any]] = {}
        # Called with each Web API call once it is recorded (its state change made) and before its
        # HTTP answer goes out: a test can act "between Slack doing it and the app hearing of it".
        self.before_answer: Callable[[Call], Awaitable[None] | None] | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "conversations.create": self._conversations_create,
            "conversations.info": self._conversations_info,
            "conversations.list": self._conversations_list,
            "conversations.members": self._conversations_members,
            "conversations.invite": self._conversations_invite,
            "conversations.kick": self._conversations_kick,
            "conversations.archive": self._conversations_archive,
            "conversations.unarchive": self._conversations_unarchive,
            "conversations.rename": self._conversations_rename,
            "conversations.setTopic": lambda args: self._set_text(args, "topic"),
            "conversations.setPurpose": lambda args: self._set_text(args, "purpose"),
            "conversations.join": self._conversations_join,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._chat_post_message,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "pins.add": self._pins_add,
            "views.open": self._open_view,
            "views.push": self._open_view,
            "views.update": self._views_update,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }
        self.add_user(bot_user_id, None, "dealbot", is_bot=True)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 and a free port, so tests can run in parallel."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._on_api)
        app.router.add_post("/response/{key}", self._on_response_url)
        app.router.add_route("*", "/upload/{file_id}", self._on_upload)
        app.router.add_get("/socket", self._on_socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self._base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackStandIn:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("SlackStandIn is not started; call start() or use `async with`")
        return self._base_url

    @property
    def api_url(self) -> str:
        """The slack-sdk ``base_url`` (with the trailing slash it needs for joining)."""
        return f"{self.base_url}/api/"

    def response_url(self, key: str) -> str:
        """A response_url as Slack puts in slash command and interaction payloads."""
        self._response_issued.setdefault(key, time.monotonic())
        return f"{self.base_url}/response/{key}"

    # -- seeding and control --------------------------------------------------------------------

    def add_user(self, user_id: str, email: str | None, name: str, *, is_bot: bool = False,
                 tz: str = "America/Los_Angeles") -> None:
        handle = (email.split("@")[0] if email else name).lower().replace(" ", ".")
        profile: dict[str, Any] = {"real_name": name, "display_name": name}
        if email is not None:  # Slack leaves email out of a profile that has none (bots).
            profile["email"] = email
        self.users[user_id] = {
            "id": user_id, "team_id": self.team_id, "name": handle, "real_name": name,
            "is_bot": is_bot, "deleted": False, "profile": profile,
            "tz": tz, "tz_label": tz, "tz_offset": 0,  # Slack's default zone for a new account
        }

    def add_channel(
        self, name: str, members: set[str], *, is_private: bool = False, is_im: bool = False
    ) -> str:
        """Seed a conversation without Slack's checks (tests may need odd states); returns its id."""
        channel_id = self._new_id("D" if is_im else "C")
        creator = self.bot_user_id if self.bot_user_id in members else min(members, default="")
        self.channels[channel_id] = Channel(
            id=channel_id, name=name, is_private=is_private or is_im, is_im=is_im,
            members=set(members), created=int(time.time()), creator=creator,
        )
        self.messages.setdefault(channel_id, [])
        return channel_id

    def add_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> str:
        """Seed a message someone else wrote (for pins, permalinks, cant_update_message); returns ts."""
        ts = self._next_ts()
        self.messages.setdefault(channel, []).append(
            Message(ts=ts, user=user, text=text, blocks=blocks, thread_ts=thread_ts)
        )
        return ts

    def new_trigger_id(self) -> str:
        """A trigger id as in an interaction payload: valid once, for ``trigger_lifetime_s``."""
        trigger_id = f"{next(self._counter)}.{int(time.time())}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = time.monotonic()
        return trigger_id

    def revoke_token(self, *, error: str = "invalid_auth") -> None:
        """From now on every Web API call answers ``error`` (as after an uninstall)."""
        self._auth_error = error

    def fail_next(self, method: str, error: str, status: int = 200, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail, without side effects."""
        self._failures.setdefault(method, deque()).extend([(error, status)] * times)

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # -- HTTP -----------------------------------------------------------------------------------

    async def _on_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = {}
        status, headers = 200, dict[str, str]()
        try:
            args = await self._read_args(request)
            token = args.pop("token", None)
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth.removeprefix("Bearer ").strip()
            body = {"ok": True, **self._dispatch(method, token, args)}
        except _Refusal as refusal:
            status = refusal.status
            body = {"ok": False, "error": refusal.error, **refusal.extra}
            if status == 429:
                headers["Retry-After"] = str(self.retry_after_s)
        call = Call(method, args, status, body["ok"], body.get("error"))
        self.calls.append(call)
        if self.before_answer is not None:
            pending = self.before_answer(call)
            if inspect.isawaitable(pending):
                await pending
        if method == "auth.test" and body["ok"]:
            headers["X-OAuth-Scopes"] = "chat:write,channels:manage,groups:write,im:write,users:read"
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    async def _read_args(request: web.Request) -> dict[str, Any]:
        """Query parameters plus a form or JSON body, as Slack accepts them."""
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _Refusal("invalid_json") from None
                if not isinstance(body, dict):
                    raise _Refusal("invalid_json")
                args.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                args.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in _JSON_ARGS:
            if isinstance(args.get(key), str) and args[key].strip()[:1] in ("[", "{"):
                try:
                    args[key] = json.loads(args[key])
                except ValueError:
                    pass  # left as a string; the method refuses it
        return args

    def _dispatch(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        """Slack's order: the method exists, auth, rate limit, then the method's own rules."""
        handler = self._methods.get(method)
        if handler is None:
            raise _Refusal("unknown_method", 404)
        if not token:
            raise _Refusal("not_authed")
        if self._auth_error is not None:
            raise _Refusal(self._auth_error)
        if (method == "apps.connections.open") != token.startswith("xapp-"):
            raise _Refusal("not_allowed_token_type")
        if token not in (self.bot_token, self.app_token):
            raise _Refusal("invalid_auth")
        self._admit(method)
        queued = self._failures.get(method)
        if queued:
            error, status = queued.popleft()
            raise _Refusal(error, status)
        return handler(args)

    def _admit(self, method: str) -> None:
        """A sliding window per method (one second unless told); refused calls do not count."""
        limit = self.rate_limits.get(method)
        if limit is None:
            return
        now = time.monotonic()
        recent = self._recent.setdefault(method, deque())
        while recent and now - recent[0] >= self.rate_window_s:
            recent.popleft()
        if len(recent) >= limit:
            raise _Refusal("ratelimited", 429)
        recent.append(now)

    async def _on_response_url(self, request: web.Request) -> web.Response:
        """Slack's response_url: JSON body, up to 5 uses within 30 minutes."""
        key = request.match_info["key"]
        issued = self._response_issued.setdefault(key, time.monotonic())
        if time.monotonic() - issued > self.response_url_lifetime_s:
            return web.Response(status=404, text="expired_url")
        if self._response_used.get(key, 0) >= self.response_url_uses:
            return web.Response(status=404, text="used_url")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        blocks = body.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            return web.Response(status=400, text="invalid_blocks_format")
        if blocks and _block_problems(blocks, MAX_MESSAGE_BLOCKS):
            return web.Response(status=400, text="invalid_blocks")
        if not (body.get("text") or blocks or body.get("attachments") or _flag(body.get("delete_original", False))):
            return web.Response(status=400, text="no_text")
        self._response_used[key] = self._response_used.get(key, 0) + 1
        self.responses.setdefault(key, []).append(body)
        return web.Response(text="ok")

    async def _on_upload(self, request: web.Request) -> web.Response:
        """The upload_url of files.getUploadURLExternal: raw bytes or a multipart ``file`` field."""
        if request.method not in ("POST", "PUT"):
            return web.Response(status=405, text="method_not_allowed")
        entry = self.files.get(request.match_info["file_id"])
        if entry is None or entry["completed"]:
            return web.Response(status=404, text="file_not_found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = form.get("file") or next((v for v in form.values() if isinstance(v, web.FileField)), None)
            data = part.file.read() if isinstance(part, web.FileField) else str(part or "").encode()
        else:
            data = await request.read()
        entry["bytes"] = data
        return web.Response(text=f"OK - {len(data)}")

    # -- state helpers --------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter):08d}"

    def _next_ts(self) -> str:
        """Message timestamps as Slack writes them, strictly increasing."""
        self._last_ts_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _can_see(self, channel: Channel) -> bool:
        return not channel.is_private or self.bot_user_id in channel.members

    def _channel(self, args: dict[str, Any], key: str = "channel") -> Channel:
        """The channel named by ``args[key]``; private ones the bot is not in do not exist for it."""
        channel = self.channels.get(str(args.get(key) or ""))
        if channel is None or not self._can_see(channel):
            raise _Refusal("channel_not_found")
        return channel

    def _by_name(self, name: str) -> Channel | None:
        return next((c for c in self.channels.values() if not c.is_im and c.name == name), None)

    def _writable(self, channel: Channel, *, not_im: bool = False) -> None:
        """The common rules for changing a channel: right type, not archived, bot is a member."""
        if not_im and channel.is_im:
            raise _Refusal("method_not_supported_for_channel_type")
        if channel.is_archived:
            raise _Refusal("is_archived")
        if self.bot_user_id not in channel.members:
            raise _Refusal("not_in_channel")

    def _message(self, channel: Channel, ts: Any) -> Message:
        for message in self.messages.get(channel.id, []):
            if message.ts == str(ts or "") and not message.deleted:
                return message
        raise _Refusal("message_not_found")

    def _channel_json(self, channel: Channel) -> dict[str, Any]:
        if channel.is_im:
            other = min(channel.members - {self.bot_user_id}, default=self.bot_user_id)
            return {"id": channel.id, "is_im": True, "user": other, "created": channel.created,
                    "is_archived": channel.is_archived, "is_org_shared": False}
        return {
            "id": channel.id, "name": channel.name, "name_normalized": channel.name,
            "is_channel": not channel.is_private, "is_group": False, "is_im": False,
            "is_mpim": channel.name.startswith("mpdm-"), "is_private": channel.is_private,
            "is_archived": channel.is_archived, "is_general": False, "created": channel.created,
            "creator": channel.creator,
            "topic": {"value": channel.topic, "creator": "", "last_set": 0},
            "purpose": {"value": channel.purpose, "creator": "", "last_set": 0},
            "is_member": self.bot_user_id in channel.members, "num_members": len(channel.members),
        }

    def _message_json(self, message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "user": message.user, "text": message.text,
                               "ts": message.ts, "team": self.team_id}
        if message.bot_id:
            out.update(bot_id=message.bot_id, app_id=self.app_id)
        if message.blocks:
            out["blocks"] = message.blocks
        if message.thread_ts:
            out["thread_ts"] = message.thread_ts
        if message.edited:
            out["edited"] = {"user": message.user, "ts": message.ts}
        return out

    # -- auth and users -------------------------------------------------------------------------

    # -- Socket Mode ------------------------------------------------------------------------------

    def _apps_connections_open(self, _args: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        return {"url": f"{self.base_url.replace('http://', 'ws://')}/socket?ticket={ticket}"}

    async def _on_socket(self, request: web.Request) -> web.StreamResponse:
        """One Socket Mode connection: a single-use ticket, ``hello``, then acks read until closed."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            raise web.HTTPUnauthorized(text="unknown or used ticket")
        self._tickets.discard(ticket)
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        await socket.send_json({"type": "hello", "num_connections": len(self._sockets) + 1,
                                "connection_info": {"app_id": self.app_id}, "debug_info": {"host": "standin"}})
        self._sockets.append(socket)
        try:
            async for frame in socket:
                if frame.type.name == "TEXT":
                    ack = json.loads(frame.data)
                    self.socket_acks.setdefault(str(ack.get("envelope_id")), ack)
        finally:
            self._sockets.remove(socket)
        return socket

    @property
    def sockets_open(self) -> int:
        return len(self._sockets)

    async def wait_socket(self, timeout_s: float = 10.0) -> None:
        """Wait until the app holds a Socket Mode connection."""
        deadline = time.monotonic() + timeout_s
        while not self._sockets:
            if time.monotonic() > deadline:
                raise TimeoutError("no Socket Mode connection")
            await asyncio.sleep(0.02)

    async def socket_send(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Push an envelope (``slash_commands``, ``interactive``, ``events_api``) to the app."""
        envelope_id = f"env-{next(self._counter)}"
        await self._sockets[-1].send_json({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api",
            **({"retry_attempt": retry_attempt, "retry_reason": "timeout"} if kind == "events_api" else {}),
        })
        return envelope_id

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"{PERMALINK_HOST}/", "team": "Stand-in", "user": self.users[self.bot_user_id]["name"],
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user") or ""))
        if user is None:
            raise _Refusal("user_not_found")
        return {"user": json.loads(json.dumps(user))}

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email") or "").strip().lower()
        for user in self.users.values():
            if email and not user.get("deleted") and str(user["profile"].get("email", "")).lower() == email:
                return {"user": json.loads(json.dumps(user))}
        raise _Refusal("users_not_found")

    # -- conversations --------------------------------------------------------------------------

    def _conversations_create(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name") or "")
        error = _name_error(name)
        if error:
            raise _Refusal(error)
        if self._by_name(name) is not None:  # archived channels keep their names
            raise _Refusal("name_taken")
        channel_id = self.add_channel(name, {self.bot_user_id}, is_private=_flag(args.get("is_private", False)))
        return {"channel": self._channel_json(self.channels[channel_id])}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel_json(self._channel(args))}

    def _conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """Public channels, and private ones the bot is in; paged (Slack's limit: 1,000)."""
        kinds = {k.strip() for k in str(args.get("types") or "public_channel").split(",")}
        hide_archived = _flag(args.get("exclude_archived", False))
        seen = [c for c in sorted(self.channels.values(), key=lambda c: c.id) if not c.is_im
                and ("private_channel" if c.is_private else "public_channel") in kinds
                and (not c.is_private or self.bot_user_id in c.members)
                and not (hide_archived and c.is_archived)]
        page, next_cursor = _page(args, seen)
        return {"channels": [self._channel_json(c) for c in page], "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_members(self, args: dict[str, Any]) -> dict[str, Any]:
        page, next_cursor = _page(args, sorted(self._channel(args).members))
        return {"members": page, "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_invite(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        users = _ids(args.get("users"))
        if not users:
            raise _Refusal("no_user")
        if len(users) > 1000:
            raise _Refusal("too_many_users")
        self._writable(channel, not_im=True)
        invited: list[str] = []
        errors: list[dict[str, Any]] = []
        for user_id in users:
            if user_id == self.bot_user_id:
                error = "cant_invite_self"
            elif user_id not in self.users:
                error = "user_not_found"
            elif self.users[user_id].get("deleted"):
                error = "cant_invite"
            elif user_id in channel.members:
                error = "already_in_channel"
            else:
                invited.append(user_id)
                continue
            errors.append({"user": user_id, "ok": False, "error": error})
        if errors and (not _flag(args.get("force", False)) or not invited):
            raise _Refusal(errors[0]["error"], errors=errors)
        channel.members.update(invited)
        return {"channel": self._channel_json(channel), **({"errors": errors} if errors else {})}

    def _conversations_kick(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        user_id = str(args.get("user") or "")
        if user_id == self.bot_user_id:
            raise _Refusal("cant_kick_self")
        if channel.is_im:
            raise _Refusal("method_not_supported_for_channel_type")
        if self.bot_user_id not in channel.members:
            raise _Refusal("not_in_channel")
        if user_id not in self.users:
            raise _Refusal("user_not_found")
        if user_id not in channel.members:
            raise _Refusal("not_in_channel")
        channel.members.discard(user_id)
        return {}

    def _conversations_archive(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if channel.is_archived:
            raise _Refusal("already_archived")
        self._writable(channel, not_im=True)
        channel.is_archived = True
        return {}

    def _conversations_unarchive(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        if channel.is_im:
            raise _Refusal("method_not_supported_for_channel_type")
        if not channel.is_archived:
            raise _Refusal("not_archived")
        channel.is_archived = False
        return {}

    def _conversations_rename(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        self._writable(channel, not_im=True)
        name = str(args.get("name") or "")
        error = _name_error(name)
        if error:
            raise _Refusal(error)
        holder = self._by_name(name)
        if holder is not None and holder.id != channel.id:
            raise _Refusal("name_taken")
        channel.name = name
        return {"channel": self._channel_json(channel)}

    def _set_text(self, args: dict[str, Any], attr: str) -> dict[str, Any]:
        """conversations.setTopic / setPurpose: at most 250 characters."""
        channel = self._channel(args)
        self._writable(channel)
        value = str(args.get(attr) or "")
        if len(value) > 250:
            raise _Refusal("too_long")
        setattr(channel, attr, value)
        return {"channel": self._channel_json(channel)}

    def _conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.channels.get(str(args.get("channel") or ""))
        if channel is None:
            raise _Refusal("channel_not_found")
        if channel.is_private:
            raise _Refusal("method_not_supported_for_channel_type")
        if channel.is_archived:
            raise _Refusal("is_archived")
        if self.bot_user_id in channel.members:
            return {"channel": self._channel_json(channel), "warning": "already_in_channel",
                    "response_metadata": {"warnings": ["already_in_channel"]}}
        channel.members.add(self.bot_user_id)
        return {"channel": self._channel_json(channel)}

    def _open_im(self, user_ids: list[str]) -> tuple[Channel, bool]:
        """The bot's IM with one user (or group DM with several), reused when it exists."""
        members = {self.bot_user_id, *user_ids}
        for channel in self.channels.values():
            if (channel.is_im or channel.name.startswith("mpdm-")) and channel.members == members:
                return channel, True
        others = sorted(members - {self.bot_user_id})
        if len(others) <= 1:
            channel_id = self.add_channel(others[0] if others else self.bot_user_id, members, is_im=True)
        else:
            name = "mpdm-" + "--".join(self.users[u].get("name", u) for u in [self.bot_user_id, *others]) + "-1"
            channel_id = self.add_channel(name, members, is_private=True)
        return self.channels[channel_id], False

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("channel"):
            channel, reused = self._channel(args), True
        else:
            user_ids = _ids(args.get("users"))
            if not user_ids:
                raise _Refusal("users_list_not_supplied")
            if len(user_ids) > 8:
                raise _Refusal("too_many_users")
            if any(u not in self.users for u in user_ids):
                raise _Refusal("user_not_found")
            channel, reused = self._open_im(user_ids)
        body = self._channel_json(channel) if _flag(args.get("return_im", False)) else {"id": channel.id}
        return {"channel": body, **({"no_op": True, "already_open": True} if reused else {})}

    # -- chat and pins --------------------------------------------------------------------------

    def _post_target(self, value: Any) -> Channel:
        """chat.postMessage takes a channel id, a user id (the bot's DM with them) or a name."""
        target = str(value or "")
        if target in self.users:
            return self._open_im([target])[0]
        if target not in self.channels:
            named = self._by_name(target.removeprefix("#"))
            target = named.id if named else target
        return self._channel({"channel": target})

    def _content(self, args: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        """Text and blocks of a message, refused the way Slack refuses them."""
        text = "" if args.get("text") is None else str(args["text"])
        blocks = args.get("blocks")
        if isinstance(blocks, str) and not blocks.strip():
            blocks = None
        if blocks is not None and not isinstance(blocks, list):
            raise _Refusal("invalid_blocks_format")
        problems = _block_problems(blocks, MAX_MESSAGE_BLOCKS) if blocks else []
        if problems:
            raise _Refusal("invalid_blocks", **_details(problems))
        if not text and not blocks and not args.get("attachments"):
            raise _Refusal("no_text")
        if len(text) > MAX_TEXT:
            raise _Refusal("msg_too_long")
        return text, blocks or None

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._post_target(args.get("channel"))
        self._writable(channel)
        text, blocks = self._content(args)
        message = Message(ts=self._next_ts(), user=self.bot_user_id, text=text, blocks=blocks,
                          thread_ts=str(args["thread_ts"]) if args.get("thread_ts") else None,
                          bot_id=self.bot_id)
        self.messages.setdefault(channel.id, []).append(message)
        return {"channel": channel.id, "ts": message.ts, "message": self._message_json(message)}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._post_target(args.get("channel"))
        user_id = str(args.get("user") or "")
        if user_id not in self.users:
            raise _Refusal("user_not_found")
        self._writable(channel)
        if user_id not in channel.members:
            raise _Refusal("user_not_in_channel")
        text, blocks = self._content(args)
        ts = self._next_ts()
        self.ephemerals.append({"channel": channel.id, "user": user_id, "text": text, "blocks": blocks,
                                "thread_ts": args.get("thread_ts"), "ts": ts})
        return {"message_ts": ts}

    def _own_message(self, args: dict[str, Any], refusal: str) -> tuple[Channel, Message]:
        channel = self._channel(args)
        message = self._message(channel, args.get("ts"))
        if message.user != self.bot_user_id or message.bot_id is None:
            raise _Refusal(refusal)
        return channel, message

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._own_message(args, "cant_update_message")
        if channel.is_archived:
            raise _Refusal("is_archived")
        # Slack keeps the previous blocks unless `blocks` is given ([] removes them).
        kept = {} if args.get("blocks") is not None else {"blocks": message.blocks}
        text, blocks = self._content({**args, **kept})
        message.text, message.blocks, message.edited = text, blocks, True
        return {"channel": channel.id, "ts": message.ts, "text": text, "message": self._message_json(message)}

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._own_message(args, "cant_delete_message")
        message.deleted = True
        return {"channel": channel.id, "ts": message.ts}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        message = self._message(channel, args.get("message_ts"))
        link = f"{PERMALINK_HOST}/archives/{channel.id}/p{message.ts.replace('.', '')}"
        if message.thread_ts and message.thread_ts != message.ts:
            link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def _pins_add(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args)
        self._writable(channel)
        message = self._message(channel, args.get("timestamp"))
        if message.pinned:
            raise _Refusal("already_pinned")
        message.pinned = True
        return {}

    # -- views ----------------------------------------------------------------------------------

    @staticmethod
    def _checked_view(raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise _Refusal("invalid_arguments", **_details(["/view: must be a JSON object"]))
        problems = _view_problems(raw)
        if problems:
            raise _Refusal("invalid_arguments", **_details(problems))
        return raw

    def _check_trigger(self, trigger_id: str) -> None:
        if not trigger_id:
            raise _Refusal("invalid_arguments", **_details(["missing required field: trigger_id"]))
        if trigger_id in self._used_triggers:
            raise _Refusal("exchanged_trigger_id")
        issued = self._triggers.get(trigger_id)
        if issued is None:
            raise _Refusal("invalid_trigger_id")
        if time.monotonic() - issued > self.trigger_lifetime_s:
            raise _Refusal("expired_trigger_id")

    def _stored_view(self, view: dict[str, Any], view_id: str, root_id: str,
                     previous_id: str | None, external_id: str) -> dict[str, Any]:
        stored = {
            **view, "id": view_id, "team_id": self.team_id, "external_id": external_id,
            "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
            "state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "root_view_id": root_id, "previous_view_id": previous_id, "app_id": self.app_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = stored
        return {"view": json.loads(json.dumps(stored))}

    def _open_view(self, args: dict[str, Any]) -> dict[str, Any]:
        """views.open / views.push: a valid modal and a fresh, unused trigger id."""
        view = self._checked_view(args.get("view"))
        trigger_id = str(args.get("trigger_id") or args.get("interactivity_pointer") or "")
        self._check_trigger(trigger_id)
        external_id = str(view.get("external_id") or "")
        if external_id and any(v["external_id"] == external_id for v in self.views.values()):
            raise _Refusal("duplicate_external_id")
        self._triggers.pop(trigger_id)
        self._used_triggers.add(trigger_id)
        view_id = self._new_id("V")
        return self._stored_view(view, view_id, view_id, None, external_id)

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(args.get("view"))
        view_id, external_id = args.get("view_id"), args.get("external_id")
        if not view_id and not external_id:
            raise _Refusal("invalid_arguments", **_details(["either view_id or external_id is required"]))
        if view_id:
            current = self.views.get(str(view_id))
        else:
            current = next((v for v in self.views.values() if v["external_id"] == external_id), None)
        if current is None:
            raise _Refusal("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _Refusal("hash_conflict")
        return self._stored_view(view, current["id"], current["root_view_id"], current["previous_view_id"],
                                 str(view.get("external_id") or current["external_id"]))

    # -- files ----------------------------------------------------------------------------------

    def _files_get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = str(args.get("filename") or "")
        try:
            length = int(args.get("length") or 0)
        except ValueError:
            raise _Refusal("invalid_arguments") from None
        if not filename or length <= 0:
            raise _Refusal("missing_argument")
        file_id = self._new_id("F")
        self.files[file_id] = {"id": file_id, "filename": filename, "length": length, "bytes": None,
                               "channel": None, "title": None, "completed": False}
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            raise _Refusal("invalid_arguments")
        for item in files:
            entry = self.files.get(str(item["id"]))
            if entry is None or entry["bytes"] is None or entry["completed"]:
                raise _Refusal("file_not_found")
        listed = _ids(args.get("channels"))
        channel_id = args.get("channel_id") or (listed[0] if listed else None)
        channel = None
        if channel_id:
            channel = self.channels.get(str(channel_id))
            if channel is None or not self._can_see(channel):
                raise _Refusal("invalid_channel")
            if channel.is_archived or self.bot_user_id not in channel.members:
                raise _Refusal("posting_to_channel_denied")
        out = []
        for item in files:
            entry = self.files[str(item["id"])]
            entry.update(title=item.get("title") or entry["filename"], completed=True,
                         channel=channel.id if channel else None)
            out.append({"id": entry["id"], "name": entry["filename"], "title": entry["title"],
                        "size": len(entry["bytes"]), "channels": [channel.id] if channel else []})
        if channel is not None:
            self.messages.setdefault(channel.id, []).append(Message(
                ts=self._next_ts(), user=self.bot_user_id, text=str(args.get("initial_comment") or ""),
                thread_ts=args.get("thread_ts") or None, bot_id=self.bot_id, files=[f["id"] for f in out],
            ))
        return {"files": out}

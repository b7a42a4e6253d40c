"""A local stand-in for the Microsoft services a Teams bot talks to, so tests drive the real botbuilder over HTTP.

Four services share one state (a channel created through Graph can be posted to through the connector):

- **OpenID** (the Bot Framework channel's issuer): metadata and a JWKS whose key carries the
  ``msteams`` endorsement; `TeamsStandIn.sign` makes channel tokens as the channel signs them
  (RS256, ``kid``, ``iss``, ``aud`` = app id, ``serviceurl``), or broken ones on request.
- **Login** (Entra ID client credentials): wrong client id or secret is ``invalid_client``; only
  the Bot Framework and Graph ``/.default`` scopes exist; Graph tokens need the real tenant, not
  ``botframework.com``; unknown tenants are ``invalid_tenant``.
- **Bot Framework connector** (REST v3): a bearer token for the Bot Framework scope; posting to a
  channel starts a thread (``<channel>;messageid=<root>``), 1:1 chats are ``a:<aad id>``; bots
  may edit and delete only their own messages; a message needs text or attachments, Adaptive
  Cards must be ``AdaptiveCard`` up to version 1.5 with a ``body``; an activity over 28 KB is 413;
  per conversation at most 7 POST/PUT a second and 60 in 30 seconds, else 429 + ``Retry-After``.
- **Microsoft Graph v1.0**: a bearer token for the Graph scope; channel name rules (1..50
  characters, no ``~#%&*{}+/\\:<>?|'"``, no leading ``_``/``.``, no trailing ``.``), 409
  ``NameAlreadyExists`` on a taken name (case-insensitive), private channels need listed members
  of the team with at least one owner, ``Conflict`` on adding a member twice, user lookup by id
  or email, and 429 ``TooManyRequests`` via `TeamsStandIn.throttle_graph`.

The server runs on its own thread and event loop: botbuilder fetches the JWKS with the blocking
``requests`` library from inside the event loop, which would deadlock a server on that same loop.
Only Microsoft is replaced; Dealbot's own code runs for real.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import re
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from types import TracebackType
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

BOTFRAMEWORK_SCOPE = "https://api.botframework.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MULTI_TENANT = "botframework.com"
GENERAL_ID = "19:general@thread.tacv2"
MAX_ACTIVITY_BYTES = 28 * 1024
MAX_CARD_VERSION = (1, 5)
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
MEMBER_TYPE = "#microsoft.graph.aadUserConversationMember"
_NAME_BANNED = "~#%&*{}+/\\:<>?|'\""
_BIND = re.compile(r"users\('([^']+)'\)$|users/([^/?']+)$")
_FILTER = re.compile(r"^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$")
_THREAD = ";messageid="


@dataclass
class Call:
    """One request as the stand-in answered it; ``body`` is what the client sent (JSON or form)."""

    service: str  # "login" | "connector" | "graph" | "openid"
    method: str
    path: str  # decoded, from the server root, e.g. "/connector/v3/conversations/a:u1/activities"
    status: int
    body: Any
    response: Any = None


@dataclass
class TeamsUser:
    """A person in the tenant's directory; the bot sees them as ``29:<aad id>``."""

    aad_id: str
    email: str
    name: str

    @property
    def teams_id(self) -> str:
        return "29:" + self.aad_id


@dataclass
class Channel:
    """A team channel; a private channel has its own ``members`` (``owners`` among them)."""

    id: str
    display_name: str
    description: str = ""
    membership: str = "standard"
    members: set[str] = field(default_factory=set)
    owners: set[str] = field(default_factory=set)
    deleted: bool = False
    created: str = ""


@dataclass
class Message:
    """A message in a thread or 1:1 chat; ``user`` is the author's aad id for a person's message."""

    id: str
    conversation_id: str
    from_bot: bool
    text: str = ""
    attachments: list[dict[str, Any]] = field(default_factory=list)
    updated_count: int = 0
    deleted: bool = False
    reply_to: str | None = None
    user: str | None = None
    activity: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Failure:
    service: str
    method: str
    path_contains: str
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class _Request:
    method: str
    segments: list[str]  # decoded path segments after the service prefix
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any


class _Refusal(Exception):
    """Raised by a handler to answer an error in the service's own shape."""

    def __init__(self, status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.message, self.headers = status, code, message or code, headers or {}


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status_code(status: int) -> str:
    """An error code for an injected failure: the status phrase, e.g. ``BadGateway``."""
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "Error"


def _name_problem(name: Any) -> str | None:
    """Teams' channel name rules, as Graph states them; None when the name is allowed."""
    if not isinstance(name, str) or not name.strip():
        return "displayName is required"
    if len(name) > 50:
        return "displayName must be at most 50 characters"
    banned = sorted({c for c in name if c in _NAME_BANNED})
    if banned:
        return f"displayName must not contain {' '.join(banned)}"
    if name[0] in "_.":
        return "displayName must not start with an underscore or a period"
    if name.endswith("."):
        return "displayName must not end with a period"
    return None


def _card_problems(attachments: Any) -> list[str]:
    """What Teams would refuse in a message's attachments (empty when it would accept them)."""
    if not isinstance(attachments, list):
        return ["attachments must be a list"]
    problems: list[str] = []
    for i, attachment in enumerate(attachments):
        where = f"attachments[{i}]"
        if not isinstance(attachment, dict) or not attachment.get("contentType"):
            problems.append(f"{where}: contentType is required")
            continue
        if attachment["contentType"] != ADAPTIVE_CARD:
            continue
        content = attachment.get("content")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            problems.append(f"{where}: Adaptive Card content.type must be 'AdaptiveCard'")
            continue
        version = str(content.get("version", ""))
        try:
            parsed = tuple(int(part) for part in version.split("."))
        except ValueError:
            parsed = ()
        if not parsed:
            problems.append(f"{where}: Adaptive Card content.version is missing or malformed ({version!r})")
        elif parsed > MAX_CARD_VERSION:
            problems.append(f"{where}: Adaptive Card version {version} is not supported; Teams renders up to 1.5")
        if not isinstance(content.get("body"), list):
            problems.append(f"{where}: Adaptive Card content.body must be a list")
    return problems


class TeamsStandIn:
    """Local OpenID issuer, Entra ID login, Bot Framework connector and Graph for one tenant and team."""

    def __init__(self, app_id: str, app_password: str, *, tenant_id: str = "tenant-1", team_id: str = "team-1") -> None:
        self.app_id = app_id
        self.app_password = app_password
        self.tenant_id = tenant_id
        self.team_id = team_id
        self.team_name = "Dealbot Team"
        self.bot_name = "Dealbot"
        self.issuer = "https://api.botframework.com"
        self.rate_limits: list[tuple[int, float]] = [(7, 1.0), (60, 30.0)]  # (requests, seconds) per conversation
        self.calls: list[Call] = []
        self.token_requests: list[tuple[str, str]] = []
        self.users: dict[str, TeamsUser] = {}
        self.team_members: set[str] = set()
        self.channels: dict[str, Channel] = {
            GENERAL_ID: Channel(GENERAL_ID, "General", created=_now_iso()),
        }
        self.kid = secrets.token_hex(8)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._foreign_key: rsa.RSAPrivateKey | None = None  # made on first use: key generation is slow
        self._tokens: dict[str, str] = {}  # access token -> scope
        self._conversations: dict[str, list[Message]] = {}  # thread or chat id -> messages
        self._failures: list[_Failure] = []
        self._graph_throttles: deque[int] = deque()
        self._recent: dict[str, deque[float]] = {}
        self._ids = itertools.count(1_700_000_000_001)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 and a free port, on a thread of its own (see the module docstring)."""
        if self._thread is not None:
            raise RuntimeError("TeamsStandIn is already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="teams-stand-in", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait, 10)
        if self._startup_error is not None or self._base_url is None:
            raise RuntimeError("TeamsStandIn did not start") from self._startup_error

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._start_site())
        except BaseException as error:  # reported to start() by the waiting caller
            self._startup_error = error
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _start_site(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._on_request)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self._base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, runner = self._loop, self._runner
        if runner is not None and loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner.cleanup(), loop))
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        self._thread, self._loop, self._runner = None, None, None

    async def __aenter__(self) -> TeamsStandIn:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("TeamsStandIn is not started; call start() or use `async with`")
        return self._base_url

    @property
    def openid_metadata_url(self) -> str:
        return self.base_url + "/openid/.well-known/openidconfiguration"

    @property
    def login_url(self) -> str:
        """The multi-tenant authority; single-tenant callers replace the last segment with the tenant."""
        return self.base_url + "/login/" + MULTI_TENANT

    @property
    def service_url(self) -> str:
        return self.base_url + "/connector/"

    @property
    def graph_url(self) -> str:
        return self.base_url + "/graph/v1.0/"

    # -- seeding and control --------------------------------------------------------------------

    def add_user(self, aad_id: str, email: str, name: str, *, in_team: bool = True) -> TeamsUser:
        """A person in the directory (Graph ``/users``), by default also a member of the team."""
        with self._lock:
            user = TeamsUser(aad_id, email, name)
            self.users[aad_id] = user
            if in_team:
                self.team_members.add(aad_id)
            return user

    def add_channel(self, display_name: str, *, membership: str = "standard", members: Iterable[str] = ()) -> str:
        """Seed a channel without Graph's checks; a private channel's first member is its owner."""
        with self._lock:
            listed = list(members)
            channel_id = f"19:{secrets.token_hex(16)}@thread.tacv2"
            self.channels[channel_id] = Channel(channel_id, display_name, membership=membership, members=set(listed),
                                                owners=set(listed[:1]), created=_now_iso())
            return channel_id

    def add_message(
        self, channel_id_or_conversation: str, user_aad_id: str, text: str, *, reply_to: str | None = None
    ) -> Message:
        """A person's message: a new thread on a channel id, a reply in a thread (or to ``reply_to``),
        or a message in a 1:1 chat ``a:<aad id>`` (created if needed). Tests deliver the activity."""
        with self._lock:
            if user_aad_id not in self.users:
                raise ValueError(f"unknown user {user_aad_id!r}; add_user first")
            target = channel_id_or_conversation
            if target.startswith("a:") and target[2:] in self.users:
                self._conversations.setdefault(target, [])
            try:
                kind, _ = self._conversation(target)
                if reply_to is not None and kind != "chat":
                    target, kind = self._find(target, kind, reply_to).conversation_id, "thread"
            except _Refusal as refusal:
                raise ValueError(refusal.message) from None
            activity = {"type": "message", "text": text}
            return self._store(target, kind, activity, from_bot=False, reply_to=reply_to, user=user_aad_id)

    def messages(self, conversation_id: str) -> list[Message]:
        """Messages of a thread or 1:1 chat (or of all threads of a channel), oldest first."""
        with self._lock:
            if conversation_id in self.channels:
                return [m for cid, ms in self._conversations.items()
                        if cid.startswith(conversation_id + _THREAD) for m in ms]
            return list(self._conversations.get(conversation_id, []))

    def thread_messages(self, channel_id: str) -> list[Message]:
        """The root post of every thread in a channel, oldest first."""
        with self._lock:
            return [ms[0] for cid, ms in self._conversations.items() if cid.startswith(channel_id + _THREAD) and ms]

    def channel_by_name(self, name: str) -> Channel | None:
        """The live channel with this display name (case-insensitive), as Teams compares names."""
        with self._lock:
            return next((c for c in self.channels.values()
                         if not c.deleted and c.display_name.lower() == name.lower()), None)

    def incoming_activity(self, message: Message) -> dict[str, Any]:
        """The activity Teams would deliver to the bot for a person's message from `add_message`.

        ``<at>{bot_name}</at>`` in the text becomes a mention entity, as Teams sends it."""
        user = self.users[message.user or ""]
        conversation_id = message.conversation_id
        channel_data: dict[str, Any] = {"tenant": {"id": self.tenant_id}}
        conversation: dict[str, Any] = {"id": conversation_id, "tenantId": self.tenant_id}
        if conversation_id.startswith("a:"):
            conversation["conversationType"] = "personal"
        else:
            channel = self.channels[conversation_id.split(";")[0]]
            conversation.update(conversationType="channel", isGroup=True)
            channel_data.update(
                teamsChannelId=channel.id, teamsTeamId=GENERAL_ID,
                channel={"id": channel.id, "name": channel.display_name},
                team={"id": GENERAL_ID, "name": self.team_name, "aadGroupId": self.team_id},
            )
        activity: dict[str, Any] = {
            "type": "message", "id": message.id, "timestamp": _now_iso(), "serviceUrl": self.service_url,
            "channelId": "msteams", "from": {"id": user.teams_id, "name": user.name, "aadObjectId": user.aad_id},
            "conversation": conversation, "recipient": {"id": "28:" + self.app_id, "name": self.bot_name},
            "text": message.text, "textFormat": "plain", "locale": "en-US", "channelData": channel_data,
            "entities": [],
        }
        if message.reply_to:
            activity["replyToId"] = message.reply_to
        tag = f"<at>{self.bot_name}</at>"
        if tag in message.text:
            activity["entities"].append({"type": "mention", "text": tag,
                                         "mentioned": {"id": "28:" + self.app_id, "name": self.bot_name}})
        return activity

    def sign(
        self, service_url: str | None = None, *, audience: str | None = None, issuer: str | None = None,
        expires_in: float = 3600, kid: str | None = None, foreign_key: bool = False,
    ) -> str:
        """A channel token as Bot Framework signs it, for the ``Authorization`` header of an activity.

        ``foreign_key`` signs with another key under the published kid; ``kid`` names another key."""
        now = int(time.time())
        claims = {
            "iss": self.issuer if issuer is None else issuer,
            "aud": self.app_id if audience is None else audience,
            "serviceurl": self.service_url if service_url is None else service_url,
            "nbf": now - 300, "iat": now - 300, "exp": now + int(expires_in),
        }
        key = self._key
        if foreign_key:
            if self._foreign_key is None:
                self._foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key = self._foreign_key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid or self.kid, "typ": "JWT"})

    def fail_next(
        self, service: str, method: str, path_contains: str, status: int, *, times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """The next ``times`` matching requests (``method`` "*" for any) answer ``status`` and change nothing."""
        with self._lock:
            self._failures.append(_Failure(service, method.upper(), path_contains, status, retry_after, times))

    def throttle_graph(self, times: int, retry_after: int = 1) -> None:
        """The next ``times`` Graph requests answer 429 ``TooManyRequests`` and change nothing."""
        with self._lock:
            self._graph_throttles.extend([retry_after] * times)

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (401), as when one expires early."""
        with self._lock:
            self._tokens.clear()

    def called(self, service: str, method: str | None = None, path_contains: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.service == service
                    and (method is None or c.method == method.upper())
                    and (path_contains is None or path_contains in c.path)]

    # -- HTTP -----------------------------------------------------------------------------------

    async def _on_request(self, request: web.Request) -> web.StreamResponse:
        segments = [urllib.parse.unquote(s) for s in request.rel_url.raw_path.split("/") if s]
        path = "/" + "/".join(segments)
        raw = await request.read()
        method = request.method.upper()
        service = segments[0] if segments else ""
        headers: dict[str, str] = {}
        with self._lock:
            body: Any = None
            try:
                body = self._parse(service, raw)
                req = _Request(method, segments[1:], path, request.rel_url.query, request.headers, body)
                status, answer = self._answer(service, req)
            except _Refusal as refusal:
                status, headers = refusal.status, refusal.headers
                answer = self._error_body(service, refusal)
            if service in ("login", "connector", "graph", "openid"):
                self.calls.append(Call(service, method, path, status, body, answer))
        if answer is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(answer, status=status, headers=headers)

    @staticmethod
    def _parse(service: str, raw: bytes) -> Any:
        """Form fields for the login service, JSON for the rest; None when there is no body."""
        if not raw:
            return None
        text = raw.decode("utf-8", errors="replace")
        if service == "login":
            return {k: v[0] for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}
        try:
            return json.loads(text)
        except ValueError:
            code = "BadRequest" if service == "graph" else "BadArgument"
            raise _Refusal(400, code, "The request body is not valid JSON") from None

    @staticmethod
    def _error_body(service: str, refusal: _Refusal) -> dict[str, Any]:
        if service == "login":
            return {"error": refusal.code, "error_description": refusal.message}
        return {"error": {"code": refusal.code, "message": refusal.message}}

    def _answer(self, service: str, req: _Request) -> tuple[int, Any]:
        """Injected failures first (they stand for trouble before the service), then the service."""
        if service == "login" and req.method == "POST":
            form = req.body if isinstance(req.body, dict) else {}
            self.token_requests.append((req.segments[0] if req.segments else "", str(form.get("scope", ""))))
        for failure in self._failures:
            if (failure.service == service and failure.method in ("*", req.method)
                    and failure.path_contains in req.path and failure.remaining > 0):
                failure.remaining -= 1
                self._failures = [f for f in self._failures if f.remaining > 0]
                retry = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                code = {"connector": "Throttled", "graph": "TooManyRequests"}.get(service, "") \
                    if failure.status == 429 else ""
                raise _Refusal(failure.status, code or _status_code(failure.status), "Injected failure", retry)
        if service == "graph" and self._graph_throttles:
            retry_after = self._graph_throttles.popleft()
            raise _Refusal(429, "TooManyRequests", "Too many requests", {"Retry-After": str(retry_after)})
        handler = {"openid": self._openid, "login": self._login, "connector": self._connector,
                   "graph": self._graph}.get(service)
        if handler is None:
            raise _Refusal(404, "NotFound", f"No service at {req.path}")
        return handler(req)

    def _require(self, req: _Request, scope: str, code: str) -> None:
        """A bearer token the login service issued for ``scope``."""
        auth = req.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refusal(401, code, "Authorization has been denied for this request: no bearer token.")
        if self._tokens.get(token.strip()) != scope:
            raise _Refusal(401, code, f"Authorization has been denied for this request: not a valid token for {scope}.")

    # -- OpenID and login -----------------------------------------------------------------------

    def _openid(self, req: _Request) -> tuple[int, Any]:
        if req.method != "GET":
            raise _Refusal(405, "MethodNotAllowed")
        if req.segments == [".well-known", "openidconfiguration"]:
            return 200, {"issuer": self.issuer, "jwks_uri": self.base_url + "/openid/keys",
                         "id_token_signing_alg_values_supported": ["RS256"],
                         "token_endpoint_auth_methods_supported": ["private_key_jwt"]}
        if req.segments == ["keys"]:
            jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
            return 200, {"keys": [{**jwk, "kid": self.kid, "use": "sig", "endorsements": ["msteams"]}]}
        raise _Refusal(404, "NotFound")

    def _login(self, req: _Request) -> tuple[int, Any]:
        if req.method != "POST" or len(req.segments) != 4 or req.segments[1:] != ["oauth2", "v2.0", "token"]:
            raise _Refusal(404, "not_found", "Only POST /{tenant}/oauth2/v2.0/token is served")
        tenant = req.segments[0]
        form = req.body if isinstance(req.body, dict) else {}
        scope = form.get("scope", "")
        if tenant not in (MULTI_TENANT, self.tenant_id):
            raise _Refusal(400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise _Refusal(400, "unsupported_grant_type", "AADSTS70003: grant_type must be client_credentials.")
        if form.get("client_id") != self.app_id:
            raise _Refusal(401, "invalid_client",
                           f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found.")
        if form.get("client_secret") != self.app_password:
            raise _Refusal(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if scope not in (BOTFRAMEWORK_SCOPE, GRAPH_SCOPE):
            raise _Refusal(400, "invalid_scope", f"AADSTS1002012: The provided value for scope {scope!r} is not valid.")
        if scope == GRAPH_SCOPE and tenant == MULTI_TENANT:
            raise _Refusal(400, "invalid_request",
                           "AADSTS700016: Graph tokens must be requested from the app's own tenant, not botframework.com.")
        token = secrets.token_urlsafe(32)
        self._tokens[token] = scope
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    # -- Bot Framework connector ----------------------------------------------------------------

    def _connector(self, req: _Request) -> tuple[int, Any]:
        self._require(req, BOTFRAMEWORK_SCOPE, "Unauthorized")
        s, method = req.segments, req.method
        if s[:2] == ["v3", "conversations"]:
            rest = s[2:]
            if not rest and method == "POST":
                return self._create_conversation(req.body)
            if len(rest) >= 2 and rest[1] == "activities":
                cid = rest[0]
                if len(rest) == 2 and method == "POST":
                    return self._send(cid, req.body, None)
                if len(rest) == 3 and method == "POST":
                    return self._send(cid, req.body, rest[2])
                if len(rest) == 3 and method == "PUT":
                    return self._update(cid, rest[2], req.body)
                if len(rest) == 3 and method == "DELETE":
                    return self._delete(cid, rest[2])
            if len(rest) >= 2 and method == "GET" and rest[1] in ("members", "pagedmembers"):
                kind, channel = self._conversation(rest[0])
                ids = self._member_ids(rest[0], kind, channel)
                if rest[1] == "pagedmembers" and len(rest) == 2:
                    return 200, self._paged([self._account(a) for a in ids], req.query)
                if len(rest) == 2:
                    return 200, [self._account(a) for a in ids]
                if len(rest) == 3 and rest[1] == "members":
                    wanted = rest[2].removeprefix("29:")
                    if wanted not in ids:
                        raise _Refusal(404, "MemberNotFound", f"{rest[2]} is not a member of {rest[0]}")
                    return 200, self._account(wanted)
        if s[:2] == ["v3", "teams"] and len(s) in (3, 4) and method == "GET":
            if s[2] not in (GENERAL_ID, self.team_id):
                raise _Refusal(404, "NotFound", f"Team {s[2]} not found")
            if len(s) == 3:
                return 200, {"id": GENERAL_ID, "name": self.team_name, "aadGroupId": self.team_id}
            if s[3] == "conversations":
                return 200, {"conversations": [{"id": c.id, "name": None if c.id == GENERAL_ID else c.display_name}
                                               for c in self.channels.values() if not c.deleted]}
        raise _Refusal(404, "NotFound", f"No connector operation {method} {req.path}")

    def _conversation(self, cid: str) -> tuple[str, Channel | None]:
        """What a conversation id names: ("channel" | "thread" | "chat", its channel)."""
        base, _, root = cid.partition(_THREAD)
        channel = self.channels.get(base)
        if channel is not None and not channel.deleted:
            if not root:
                return "channel", channel
            if cid in self._conversations:
                return "thread", channel
        if cid.startswith("a:") and cid in self._conversations:
            return "chat", None
        raise _Refusal(404, "ConversationNotFound", f"Conversation {cid} not found.")

    def _admit(self, key: str) -> None:
        """Rolling windows per conversation; a refused request does not count and does not post."""
        now = time.monotonic()
        recent = self._recent.setdefault(key, deque())
        longest = max(span for _, span in self.rate_limits)
        while recent and now - recent[0] >= longest:
            recent.popleft()
        waits = []
        for limit, span in self.rate_limits:
            inside = [t for t in recent if now - t < span]
            if len(inside) >= limit:
                waits.append(inside[-limit] + span - now)
        if waits:
            retry = max(1, math.ceil(max(waits)))
            raise _Refusal(429, "Throttled", "Too many requests to this conversation.", {"Retry-After": str(retry)})
        recent.append(now)

    @staticmethod
    def _check_activity(activity: Any, *, update: bool = False) -> None:
        """Teams' rules for an outgoing activity: size, then type, then content."""
        if not isinstance(activity, dict):
            raise _Refusal(400, "BadArgument", "The activity must be a JSON object")
        size = len(json.dumps(activity).encode())
        if size > MAX_ACTIVITY_BYTES:
            raise _Refusal(413, "MessageSizeTooBig", f"The activity is {size} bytes; the limit is {MAX_ACTIVITY_BYTES}.")
        kind = activity.get("type")
        if kind == "typing" and not update:
            return
        if kind != "message":
            raise _Refusal(400, "BadArgument", f"Unsupported activity type {kind!r}; expected 'message'")
        attachments = activity.get("attachments") or []
        if not activity.get("text") and not attachments:
            raise _Refusal(400, "BadArgument", "A message activity needs text or attachments")
        problems = _card_problems(attachments)
        if problems:
            raise _Refusal(400, "BadArgument", "; ".join(problems))

    def _store(self, target: str, kind: str, activity: dict[str, Any], *, from_bot: bool,
               reply_to: str | None = None, user: str | None = None) -> Message:
        """Post into a conversation: on a channel a new thread, in a thread or chat a message."""
        message_id = str(next(self._ids))
        if kind == "channel":
            conversation_id, reply_to = f"{target}{_THREAD}{message_id}", None
        else:
            conversation_id = target
            if kind == "thread" and reply_to is None:
                reply_to = target.partition(_THREAD)[2]
        message = Message(message_id, conversation_id, from_bot, str(activity.get("text") or ""),
                          list(activity.get("attachments") or []), reply_to=reply_to, user=user,
                          activity=activity)
        self._conversations.setdefault(conversation_id, []).append(message)
        return message

    def _find(self, cid: str, kind: str, activity_id: str) -> Message:
        """A message of this conversation (a channel id covers all its threads)."""
        pool = self.messages(cid) if kind == "channel" else self._conversations.get(cid, [])
        for message in pool:
            if message.id == activity_id and not message.deleted:
                return message
        raise _Refusal(404, "ActivityNotFound", f"Activity {activity_id} not found in {cid}.")

    def _send(self, cid: str, activity: Any, reply_to_id: str | None) -> tuple[int, Any]:
        """Send (a channel id starts a thread) or reply into the thread holding ``reply_to_id``."""
        kind, _ = self._conversation(cid)
        self._admit(cid)
        self._check_activity(activity)
        target = cid
        if reply_to_id is not None:
            original = self._find(cid, kind, reply_to_id)
            if kind == "channel":
                target, kind = original.conversation_id, "thread"
        if activity.get("type") == "typing":
            return 201, {}
        message = self._store(target, kind, activity, from_bot=True, reply_to=reply_to_id)
        return 201, {"id": message.id}

    def _create_conversation(self, params: Any) -> tuple[int, Any]:
        if not isinstance(params, dict):
            raise _Refusal(400, "BadArgument", "ConversationParameters must be a JSON object")
        channel_data: dict[str, Any] = params.get("channelData") or {}
        if not isinstance(channel_data, dict):
            raise _Refusal(400, "BadArgument", "channelData must be a JSON object")
        tenant = params.get("tenantId") or (channel_data.get("tenant") or {}).get("id")
        if tenant and tenant != self.tenant_id:
            raise _Refusal(400, "BadArgument", f"Tenant {tenant} is not the bot's tenant")
        activity = params.get("activity")
        channel_id = (channel_data.get("channel") or {}).get("id")
        if channel_id:
            kind, _ = self._conversation(channel_id)
            if kind != "channel":
                raise _Refusal(404, "ConversationNotFound", f"Channel {channel_id} not found.")
            if activity is None:
                raise _Refusal(400, "BadArgument", "Starting a thread in a channel needs an activity")
            self._admit(channel_id)
            self._check_activity(activity)
            message = self._store(channel_id, "channel", activity, from_bot=True)
            return 201, {"id": message.conversation_id, "activityId": message.id}
        members = params.get("members") or []
        if not isinstance(members, list) or not members:
            raise _Refusal(400, "BadArgument", "A conversation needs channelData.channel.id or members")
        if len(members) > 1:
            why = "Bots cannot create group chats" if params.get("isGroup") else "Several members need isGroup"
            raise _Refusal(400, "BadArgument", why)
        first = members[0] if isinstance(members[0], dict) else {}
        member_id = str(first.get("id") or "").removeprefix("29:")
        if member_id not in self.users:
            raise _Refusal(400, "BadArgument", f"Unknown member {first.get('id')!r}")
        if member_id not in self.team_members:
            raise _Refusal(403, "Forbidden", "The bot is not installed for this user (not in the team).")
        chat_id = "a:" + member_id
        self._admit(chat_id)
        if activity is not None:
            self._check_activity(activity)
        self._conversations.setdefault(chat_id, [])
        if activity is None or activity.get("type") == "typing":
            return 201, {"id": chat_id}
        message = self._store(chat_id, "chat", activity, from_bot=True)
        return 201, {"id": chat_id, "activityId": message.id}

    def _own(self, cid: str, activity_id: str) -> Message:
        kind, _ = self._conversation(cid)
        message = self._find(cid, kind, activity_id)
        if not message.from_bot:
            raise _Refusal(403, "Forbidden", "A bot can only change its own messages.")
        return message

    def _update(self, cid: str, activity_id: str, activity: Any) -> tuple[int, Any]:
        self._conversation(cid)
        self._admit(cid)
        message = self._own(cid, activity_id)
        self._check_activity(activity, update=True)
        message.text = str(activity.get("text") or "")
        message.attachments = list(activity.get("attachments") or [])
        message.activity = activity
        message.updated_count += 1
        return 200, {"id": activity_id}

    def _delete(self, cid: str, activity_id: str) -> tuple[int, Any]:
        self._own(cid, activity_id).deleted = True
        return 200, None

    def _member_ids(self, cid: str, kind: str, channel: Channel | None) -> list[str]:
        """A chat's user; a channel's or thread's: the team, or a private channel's own members."""
        if kind == "chat" or channel is None:
            return [cid[2:]]
        wanted = channel.members if channel.membership == "private" else self.team_members
        return [aad for aad in self.users if aad in wanted]

    def _account(self, aad_id: str) -> dict[str, Any]:
        user = self.users[aad_id]
        return {"id": user.teams_id, "name": user.name, "aadObjectId": user.aad_id, "email": user.email,
                "userPrincipalName": user.email, "tenantId": self.tenant_id, "userRole": "user"}

    @staticmethod
    def _paged(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
        try:
            size = min(max(int(query.get("pageSize") or 200), 1), 500)
            token = query.get("continuationToken")
            offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            raise _Refusal(400, "BadArgument", "Invalid pageSize or continuationToken") from None
        end = offset + size
        page: dict[str, Any] = {"members": items[offset:end]}
        if end < len(items):
            page["continuationToken"] = base64.urlsafe_b64encode(str(end).encode()).decode()
        return page

    # -- Microsoft Graph ------------------------------------------------------------------------

    def _graph(self, req: _Request) -> tuple[int, Any]:
        self._require(req, GRAPH_SCOPE, "InvalidAuthenticationToken")
        s, method, body = req.segments, req.method, req.body
        if s[:1] != ["v1.0"] or len(s) < 3:
            raise _Refusal(400, "BadRequest", f"Resource not found for the segment in {req.path}")
        s = s[1:]
        if s[0] == "users" and len(s) == 2:
            self._allow(method, "GET")
            return 200, self._user_json(self._directory_user(s[1]))
        if s[0] != "teams":
            raise _Refusal(400, "BadRequest", f"Resource not found for the segment '{s[0]}'")
        if s[1] != self.team_id:
            raise _Refusal(404, "NotFound", f"No team found with Group Id {s[1]}")
        rest = s[2:]
        if rest == ["channels"]:
            self._allow(method, "GET", "POST")
            if method == "POST":
                return 201, self._channel_json(self._create_channel(body))
            return 200, {"value": [self._channel_json(c) for c in self._list_channels(req.query)]}
        if rest == ["members"]:
            self._allow(method, "GET", "POST")
            if method == "POST":
                aad_id = self._bound_user(body)
                if aad_id not in self.users:
                    raise _Refusal(404, "NotFound", f"User {aad_id} not found")
                if aad_id in self.team_members:
                    raise _Refusal(409, "Conflict", f"User {aad_id} is already a member of the team")
                self.team_members.add(aad_id)
                return 201, self._member_json(aad_id, "team", self._roles(body))
            return 200, {"value": [self._member_json(a, "team", []) for a in self.users if a in self.team_members]}
        if len(rest) >= 2 and rest[0] == "channels":
            channel = self.channels.get(rest[1])
            if channel is None or channel.deleted:
                raise _Refusal(404, "NotFound", f"Channel {rest[1]} not found")
            if len(rest) == 2:
                self._allow(method, "GET", "PATCH", "DELETE")
                if method == "PATCH":
                    self._patch_channel(channel, body)
                    return 204, None
                if method == "DELETE":
                    if channel.id == GENERAL_ID:
                        raise _Refusal(400, "BadRequest", "The General channel cannot be deleted")
                    channel.deleted = True
                    return 204, None
                return 200, self._channel_json(channel)
            if rest[2:] == ["members"]:
                self._allow(method, "GET", "POST")
                if method == "POST":
                    return 201, self._add_channel_member(channel, body)
                if channel.membership == "private":
                    ids = [a for a in self.users if a in channel.members]
                    return 200, {"value": [self._member_json(a, channel.id, ["owner"] if a in channel.owners else [])
                                           for a in ids]}
                ids = [a for a in self.users if a in self.team_members]
                return 200, {"value": [self._member_json(a, channel.id, []) for a in ids]}
        raise _Refusal(400, "BadRequest", f"Unsupported request {method} {req.path}")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _Refusal(405, "Request_BadRequest", f"{method} is not supported here")

    def _directory_user(self, key: str) -> TeamsUser:
        """A user by aad id, or by email / userPrincipalName (case-insensitive)."""
        user = self.users.get(key) or next((u for u in self.users.values() if u.email.lower() == key.lower()), None)
        if user is None:
            raise _Refusal(404, "Request_ResourceNotFound",
                           f"Resource '{key}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        return user

    @staticmethod
    def _user_json(user: TeamsUser) -> dict[str, Any]:
        return {"id": user.aad_id, "displayName": user.name, "mail": user.email,
                "userPrincipalName": user.email, "accountEnabled": True}

    def _member_json(self, aad_id: str, scope: str, roles: list[str]) -> dict[str, Any]:
        user = self.users[aad_id]
        member_id = base64.b64encode(f"{scope}##{aad_id}".encode()).decode()
        return {"@odata.type": MEMBER_TYPE, "id": member_id, "userId": aad_id, "email": user.email,
                "displayName": user.name, "roles": roles, "tenantId": self.tenant_id}

    def _channel_json(self, channel: Channel) -> dict[str, Any]:
        web_url = (f"https://teams.microsoft.com/l/channel/{urllib.parse.quote(channel.id, safe='')}/"
                   f"{urllib.parse.quote(channel.display_name, safe='')}?groupId={self.team_id}"
                   f"&tenantId={self.tenant_id}")
        return {"id": channel.id, "displayName": channel.display_name, "description": channel.description,
                "membershipType": channel.membership, "webUrl": web_url, "createdDateTime": channel.created,
                "email": ""}

    @staticmethod
    def _bound_user(member: Any) -> str:
        """The aad id in a conversationMember's ``user@odata.bind``."""
        if not isinstance(member, dict) or member.get("@odata.type") != MEMBER_TYPE:
            raise _Refusal(400, "BadRequest", f"A member must have @odata.type {MEMBER_TYPE}")
        match = _BIND.search(str(member.get("user@odata.bind") or ""))
        if match is None:
            raise _Refusal(400, "BadRequest", "A member needs user@odata.bind = .../users('<aad id>')")
        return match.group(1) or match.group(2)

    @staticmethod
    def _roles(member: Any) -> list[str]:
        roles = member.get("roles", []) if isinstance(member, dict) else []
        if not isinstance(roles, list) or any(r not in ("owner", "member", "guest") for r in roles):
            raise _Refusal(400, "BadRequest", "roles must be a list of 'owner', 'member' or 'guest'")
        return [r for r in roles if r == "owner"]

    def _check_name(self, name: Any, channel_id: str | None) -> str:
        problem = _name_problem(name)
        if problem:
            raise _Refusal(400, "BadRequest", problem)
        holder = self.channel_by_name(name)
        if holder is not None and holder.id != channel_id:
            raise _Refusal(409, "NameAlreadyExists", "Channel name already existed, please use other name.")
        return str(name)

    @staticmethod
    def _check_description(description: Any) -> str:
        if description is None:
            return ""
        if not isinstance(description, str) or len(description) > 1024:
            raise _Refusal(400, "BadRequest", "description must be a string of at most 1024 characters")
        return description

    def _create_channel(self, body: Any) -> Channel:
        if not isinstance(body, dict):
            raise _Refusal(400, "BadRequest", "The request body must be a channel object")
        membership = body.get("membershipType", "standard")
        if membership not in ("standard", "private"):
            raise _Refusal(400, "BadRequest", "membershipType must be 'standard' or 'private'")
        name = self._check_name(body.get("displayName"), None)
        description = self._check_description(body.get("description"))
        members, owners = set(), set()
        listed = body.get("members")
        if membership == "standard" and listed:
            raise _Refusal(400, "BadRequest", "members can only be listed for a private channel")
        if membership == "private":
            if not isinstance(listed, list) or not listed:
                raise _Refusal(400, "BadRequest", "A private channel needs members, at least one of them an owner")
            for member in listed:
                aad_id = self._bound_user(member)
                if aad_id not in self.team_members:
                    raise _Refusal(400, "BadRequest", f"User {aad_id} is not a member of the team")
                members.add(aad_id)
                if "owner" in self._roles(member):
                    owners.add(aad_id)
            if not owners:
                raise _Refusal(400, "BadRequest", "A private channel needs at least one member with the owner role")
        channel_id = f"19:{secrets.token_hex(16)}@thread.tacv2"
        channel = Channel(channel_id, name, description, membership, members, owners, created=_now_iso())
        self.channels[channel_id] = channel
        return channel

    def _list_channels(self, query: Mapping[str, str]) -> list[Channel]:
        live = [c for c in self.channels.values() if not c.deleted]
        expression = query.get("$filter")
        if expression is None:
            return live
        match = _FILTER.match(expression)
        if match is None:
            raise _Refusal(400, "BadRequest", "Only $filter=displayName eq '<name>' is supported")
        wanted = match.group(1).replace("''", "'").lower()
        return [c for c in live if c.display_name.lower() == wanted]

    def _patch_channel(self, channel: Channel, body: Any) -> None:
        if not isinstance(body, dict) or not ({"displayName", "description"} & body.keys()):
            raise _Refusal(400, "BadRequest", "Give displayName and/or description")
        name = channel.display_name
        if "displayName" in body and body["displayName"] != channel.display_name:
            if channel.id == GENERAL_ID:
                raise _Refusal(400, "BadRequest", "The General channel cannot be renamed")
            name = self._check_name(body["displayName"], channel.id)
        description = self._check_description(body["description"]) if "description" in body else channel.description
        channel.display_name, channel.description = name, description

    def _add_channel_member(self, channel: Channel, body: Any) -> dict[str, Any]:
        if channel.membership != "private":
            raise _Refusal(400, "BadRequest", "Members can only be added to a private channel")
        aad_id = self._bound_user(body)
        roles = self._roles(body)
        if aad_id not in self.team_members:
            raise _Refusal(400, "BadRequest", f"User {aad_id} is not a member of the team")
        if aad_id in channel.members:
            raise _Refusal(409, "Conflict", f"User {aad_id} is already a member of the channel")
        channel.members.add(aad_id)
        if "owner" in roles:
            channel.owners.add(aad_id)
        return self._member_json(aad_id, channel.id, roles)

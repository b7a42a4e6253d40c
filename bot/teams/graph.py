"""A small Microsoft Graph client: app-only token, JSON in and out, Graph's errors as the
deal-room port's exceptions (``NameAlreadyExists`` -> `NameTaken`, 429/503 with ``Retry-After``
-> `RateLimited`, 404 -> `ChannelGone`, other 4xx -> `Refused`). No retries here: the outbox
retries, paced and idempotently, and a sleep inside one call would hold up every other row."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.teams.tokens import ClientCredentials
from deal_rooms.port import ChannelGone, NameTaken, PlatformError, RateLimited, Refused

log = logging.getLogger("dealbot.teams.graph")
TIMEOUT = aiohttp.ClientTimeout(total=30)
DEFAULT_RETRY_AFTER_S = 10.0


class AlreadyThere(Refused):
    """409 on adding something (a member) that is already there: for us, success."""


def segment(value: str) -> str:
    """An id or email as one URL path segment (channel ids contain ``:`` and ``@``)."""
    return quote(value, safe="")


class Graph:
    def __init__(self, base_url: str, tokens: ClientCredentials) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.tokens = tokens

    async def call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                   params: dict[str, str] | None = None) -> dict[str, Any] | None:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self.tokens.token()}"}
            try:
                async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                    async with http.request(method, self.base_url + path.lstrip("/"), json=body, params=params,
                                            headers=headers) as response:
                        if response.status == 401 and attempt == 1:
                            self.tokens.forget()  # expired or revoked early: one fresh token, once
                            continue
                        if response.status >= 400:
                            raise await _error(response)
                        raw = await response.read()
                        answer = json.loads(raw) if raw.strip() else None
                        return answer if isinstance(answer, dict) else None
            except (aiohttp.ClientError, TimeoutError) as error:
                raise PlatformError(f"Graph unreachable: {type(error).__name__}") from error
        raise Refused("Graph refused the app's token")


async def _error(response: aiohttp.ClientResponse) -> PlatformError:
    try:
        detail = (await response.json(content_type=None)).get("error") or {}
    except (ValueError, AttributeError, aiohttp.ContentTypeError):
        detail = {}
    code, message = str(detail.get("code") or ""), str(detail.get("message") or "")
    status = response.status
    log.info("graph call refused", extra={"status": status, "code": code})
    if status == 429 or (status == 503 and "Retry-After" in response.headers):
        try:
            after = float(response.headers.get("Retry-After", DEFAULT_RETRY_AFTER_S))
        except ValueError:
            after = DEFAULT_RETRY_AFTER_S
        return RateLimited(after)
    if code == "NameAlreadyExists" or (status == 400 and "name already exist" in message.lower()):
        return NameTaken(code or message)
    if status == 409:
        return AlreadyThere(code or "Conflict")
    if status == 404:
        return ChannelGone(code or "NotFound")
    if 400 <= status < 500:
        return Refused(f"{code}: {message}" if code else f"HTTP {status}")
    return PlatformError(f"Graph HTTP {status} {code}".strip())

"""App-only access tokens from Microsoft Entra ID (the OAuth 2.0 client-credentials flow).

One `ClientCredentials` per audience (the Bot Framework connector, Microsoft Graph). A token is
kept until five minutes before it expires and concurrent callers share one request, so a burst
of messages costs one token request an hour. Written on aiohttp rather than MSAL: MSAL is
synchronous (its HTTP calls would stall the event loop) and accepts only Microsoft-hosted
authorities over HTTPS, while sovereign clouds and tests point the login URL elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("dealbot.teams")
REFRESH_MARGIN_S = 300.0
TIMEOUT = aiohttp.ClientTimeout(total=20)


class TokenError(PermissionError):
    """Entra ID refused (wrong secret, unknown tenant) or could not be reached. A PermissionError,
    as botbuilder's own credentials raise, so the adapter treats both alike."""


@dataclass(frozen=True, slots=True)
class Authority:
    """Where tokens come from: ``https://login.microsoftonline.com/<tenant>`` in the public cloud."""

    url: str

    def for_tenant(self, tenant: str | None) -> Authority:
        """The same login host, another tenant (single-tenant bots and Graph use their own)."""
        if not tenant:
            return self
        return Authority(self.url.rstrip("/").rsplit("/", 1)[0] + "/" + tenant)

    @property
    def token_url(self) -> str:
        return self.url.rstrip("/") + "/oauth2/v2.0/token"


class ClientCredentials:
    def __init__(self, authority: Authority, client_id: str, secret: str, scope: str) -> None:
        self.authority, self.client_id, self._secret = authority, client_id, secret
        self.scope = scope if scope.endswith("/.default") else scope.rstrip("/") + "/.default"
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and time.monotonic() < self._expires - REFRESH_MARGIN_S:
            return self._token
        async with self._lock:  # one request for everyone waiting
            if self._token and time.monotonic() < self._expires - REFRESH_MARGIN_S:
                return self._token
            self._token, self._expires = await self._fetch()
            return self._token

    def forget(self) -> None:
        """After a 401 from the service: the next call asks for a fresh token."""
        self._token = None

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret,
                "scope": self.scope}
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                async with http.post(self.authority.token_url, data=form) as response:
                    answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise TokenError(f"cannot reach {self.authority.token_url}: {type(error).__name__}") from error
        if not isinstance(answer, dict) or "access_token" not in answer:
            code = answer.get("error", "no token") if isinstance(answer, dict) else "no token"
            log.error("token request refused", extra={"scope": self.scope, "error": code})
            raise TokenError(f"Entra ID refused a token for {self.scope}: {code}")
        return str(answer["access_token"]), time.monotonic() + float(answer.get("expires_in", 3599))

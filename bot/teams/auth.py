"""Bot Framework authentication for Dealbot: incoming JWTs checked by botbuilder, every failure a 401;
outgoing tokens from our own client-credentials flow.

botbuilder validates the channel's token (issuer, audience = our app id, the ``serviceurl`` claim,
RS256 key from the OpenID metadata with the channel's endorsement), but only `PermissionError`
becomes 401 in `CloudAdapter.process`: a missing header, a bad signature, an unknown key id or an
expired token escape as other exceptions and would answer 500 (and Microsoft would retry).
`StrictAuthentication` turns exactly those (raised while authenticating, before any turn runs)
into `PermissionError`; an unreachable metadata endpoint is our outage, not the caller's fault,
and stays a 503 (`AuthUnavailable`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from botbuilder.schema import Activity
from botframework.connector.auth import (
    AppCredentials,
    AuthenticateRequestResult,
    AuthenticationConstants,
    BotFrameworkAuthentication,
    BotFrameworkAuthenticationFactory,
    ClaimsIdentity,
    ConnectorFactory,
    ServiceClientCredentialsFactory,
    UserTokenClient,
)
from botframework.connector.skills import BotFrameworkClient

from bot.settings import Settings
from bot.teams.tokens import Authority, ClientCredentials, TokenError

log = logging.getLogger("dealbot.teams")
PUBLIC_LOGIN_URL = AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL  # .../botframework.com
PUBLIC_BOT_SCOPE = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE


class NotAuthenticated(PermissionError):
    """The activity's token is missing or not good: 401. A PermissionError, as botbuilder
    expects, yet its own type, so a token *we* fail to get during the turn is not mistaken for it."""


class AuthUnavailable(Exception):
    """The channel's signing keys could not be fetched: answer 503 so the channel retries."""


class _Bearer(AppCredentials):  # type: ignore[misc]
    """Credentials holding a token fetched asynchronously beforehand: msrest asks for it
    synchronously while signing each request, which must not block the event loop."""

    def __init__(self, app_id: str, token: str, scope: str) -> None:
        super().__init__(app_id=app_id, oauth_scope=scope)
        self._token = token

    def get_access_token(self, force_refresh: bool = False) -> str:
        return self._token


class TeamsCredentials(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """botbuilder asks here for the credentials of every connector client it builds."""

    def __init__(self, app_id: str, password: str, tenant_id: str | None) -> None:
        self.app_id, self._password, self.tenant_id = app_id, password, tenant_id
        self._sources: dict[tuple[str, str], ClientCredentials] = {}

    def source(self, login_url: str, scope: str) -> ClientCredentials:
        """One token cache per (authority, audience)."""
        authority = Authority(login_url).for_tenant(self.tenant_id)
        found = self._sources.get((authority.url, scope))
        if found is None:
            found = self._sources[(authority.url, scope)] = ClientCredentials(authority, self.app_id, self._password,
                                                                              scope)
        return found

    async def is_valid_app_id(self, app_id: str) -> bool:
        return app_id == self.app_id

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> AppCredentials:
        if app_id != self.app_id:
            raise TokenError("credentials asked for another app id")
        scope = oauth_scope or PUBLIC_BOT_SCOPE
        token = await self.source(login_endpoint or PUBLIC_LOGIN_URL, scope).token()
        return _Bearer(app_id, token, scope)


class StrictAuthentication(BotFrameworkAuthentication):  # type: ignore[misc]
    """botbuilder's authentication, with every way a request can fail authentication a 401."""

    def __init__(self, inner: BotFrameworkAuthentication) -> None:
        self._inner = inner

    async def authenticate_request(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        if not (auth_header or "").strip():
            raise NotAuthenticated("no Authorization header")
        try:
            return await self._inner.authenticate_request(activity, auth_header)
        except requests.RequestException as error:
            raise AuthUnavailable(f"cannot fetch the channel's signing keys: {type(error).__name__}") from error
        except Exception as error:  # raised while checking the token: the token is not good
            log.info("activity refused: %s", type(error).__name__)
            raise NotAuthenticated(f"token rejected ({type(error).__name__})") from error

    async def authenticate_streaming_request(self, auth_header: str, channel_id_header: str) -> AuthenticateRequestResult:
        raise NotAuthenticated("streaming (Direct Line ASE) is not supported")

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        return self._inner.create_connector_factory(claims_identity)

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> UserTokenClient:
        return await self._inner.create_user_token_client(claims_identity)

    def create_bot_framework_client(self) -> BotFrameworkClient:
        return self._inner.create_bot_framework_client()

    def get_originating_audience(self) -> str:
        return str(self._inner.get_originating_audience())

    async def authenticate_channel_request(self, auth_header: str) -> ClaimsIdentity:
        return await self._inner.authenticate_channel_request(auth_header)


@dataclass(frozen=True, slots=True)
class TeamsAuth:
    authentication: StrictAuthentication
    credentials: TeamsCredentials
    login_url: str
    bot_scope: str


def teams_auth(settings: Settings) -> TeamsAuth:
    """botbuilder's authentication from our settings: the public cloud unless endpoints are set."""
    assert settings.microsoft_app_id and settings.microsoft_app_password
    tenant = settings.microsoft_app_tenant_id if settings.microsoft_app_type == "SingleTenant" else None
    credentials = TeamsCredentials(settings.microsoft_app_id, settings.microsoft_app_password.get_secret_value(),
                                   tenant)
    endpoints: dict[str, Any] = {
        "to_bot_from_channel_open_id_metadata_url": settings.to_bot_from_channel_openid_metadata_url,
        "to_bot_from_channel_token_issuer": settings.to_bot_from_channel_token_issuer,
        "to_channel_from_bot_login_url": settings.to_channel_from_bot_login_url,
        "to_channel_from_bot_oauth_scope": settings.to_channel_from_bot_oauth_scope,
    }
    if any(endpoints.values()):  # botbuilder's "parameterized" cloud needs each one
        endpoints = {
            "to_bot_from_channel_open_id_metadata_url": endpoints["to_bot_from_channel_open_id_metadata_url"]
            or AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL,
            "to_bot_from_channel_token_issuer": endpoints["to_bot_from_channel_token_issuer"]
            or AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER,
            "to_channel_from_bot_login_url": endpoints["to_channel_from_bot_login_url"] or PUBLIC_LOGIN_URL,
            "to_channel_from_bot_oauth_scope": endpoints["to_channel_from_bot_oauth_scope"] or PUBLIC_BOT_SCOPE,
        }
        inner = BotFrameworkAuthenticationFactory.create(credential_factory=credentials, **endpoints)
    else:
        inner = BotFrameworkAuthenticationFactory.create(credential_factory=credentials)
    return TeamsAuth(StrictAuthentication(inner), credentials,
                     settings.to_channel_from_bot_login_url or PUBLIC_LOGIN_URL,
                     settings.to_channel_from_bot_oauth_scope or PUBLIC_BOT_SCOPE)

"""All configuration in one typed object, read from the environment (and `.env`) at start-up.

Validation happens once, here, with messages that say what to set instead, so a misconfigured
server refuses to start rather than failing on the first request.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from deal_rooms.policy import RoomPolicy
from deal_rooms.rooms import RoomSettings
from crm_store.digest_content import Options
from handlers.digest_schedule import DigestSettings
from transcripts.capture import CaptureSettings

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./dealbot.db"


class SettingsError(Exception):
    """Configuration that cannot work; the message says what to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    microsoft_app_id: str | None = None
    microsoft_app_password: SecretStr | None = None
    microsoft_app_tenant_id: str | None = None
    microsoft_app_type: Literal["MultiTenant", "SingleTenant"] = "MultiTenant"
    # Bot Framework endpoints under botbuilder's own names; unset: Microsoft's public cloud.
    to_bot_from_channel_openid_metadata_url: str | None = None
    to_bot_from_channel_token_issuer: str | None = None
    to_channel_from_bot_login_url: str | None = None
    to_channel_from_bot_oauth_scope: str | None = None
    teams_service_url: str = "https://smba.trafficmanager.net/teams/"
    graph_api_url: str = "https://graph.microsoft.com/v1.0/"
    teams_team_id: str | None = None
    deal_room_min_amount: Decimal = Field(default=Decimal(100_000), ge=0)
    deal_room_stages: Annotated[list[str], NoDecode] = Field(default_factory=list)
    deal_room_private: bool = True
    deal_room_min_amounts: Annotated[dict[str, Decimal], NoDecode] = Field(default_factory=dict)
    deal_room_name_template: str = "deal-{account}-{deal}"
    deal_room_invite_manager: bool = False
    deal_room_archive_delay_hours: float = Field(default=24.0, ge=0)
    deal_room_update_group_seconds: float = Field(default=5.0, gt=0)
    slack_tier2_per_minute: float = Field(default=20.0, gt=0)
    outbox_lease_seconds: float = Field(default=120.0, ge=5)
    dealbot_api_token: SecretStr | None = None
    digest_default_tz: str = "UTC"
    digest_stale_days: int = Field(default=14, ge=1)
    digest_grace_hours: float = Field(default=6.0, ge=0)
    digest_amount_change_percent: Decimal = Field(default=Decimal(10), gt=0)
    capture_mode: Literal["suggest", "auto", "explicit"] = "suggest"
    capture_bot_messages: bool = False
    capture_reaction: str = "white_check_mark"
    transcript_retention_days: int | None = Field(default=None, ge=1)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        fixes = {"postgresql://": "postgresql+asyncpg://", "postgres://": "postgresql+asyncpg://",
                 "postgresql+psycopg2://": "postgresql+asyncpg://", "sqlite://": "sqlite+aiosqlite://"}
        for wrong, right in fixes.items():
            if url.startswith(wrong):
                raise ValueError(f"use an async driver: write {right}{url[len(wrong):]}")
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("expected sqlite+aiosqlite:///path.db or postgresql+asyncpg://user:pass@host/db")
        return url

    @field_validator("deal_room_stages", mode="before")
    @classmethod
    def _split_stages(cls, value: object) -> object:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("deal_room_min_amounts", mode="before")
    @classmethod
    def _split_amounts(cls, value: object) -> object:
        """``EUR=90000,GBP=80000``: a threshold per currency."""
        if not isinstance(value, str):
            return value
        table: dict[str, str] = {}
        for part in (p.strip() for p in value.split(",") if p.strip()):
            currency, sep, amount = part.partition("=")
            if not sep or len(currency.strip()) != 3:
                raise ValueError(f"expected CURRENCY=AMOUNT pairs such as EUR=90000,GBP=80000; got {part!r}")
            table[currency.strip().upper()] = amount.strip()
        return table

    @field_validator("deal_room_name_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(account="a", deal="d")
        except (KeyError, IndexError, ValueError):
            raise ValueError("use {account} and {deal} only, e.g. deal-{account}-{deal}") from None
        if "{deal}" not in value:
            raise ValueError("the template must contain {deal}, e.g. deal-{account}-{deal}")
        return value

    @field_validator("capture_reaction")
    @classmethod
    def _reaction(cls, value: str) -> str:
        name = value.strip().strip(":").lower()
        if not name or any(c.isspace() for c in name):
            raise ValueError("give the reaction's name as Slack writes it, e.g. white_check_mark")
        return name

    @field_validator("digest_default_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        if self.slack_bot_token and not (self.slack_signing_secret or self.slack_app_token):
            raise ValueError("SLACK_BOT_TOKEN is set: also set SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN (Socket Mode)")
        if bool(self.microsoft_app_id) != bool(self.microsoft_app_password):
            raise ValueError("set both MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD, or neither")
        if self.microsoft_app_type == "SingleTenant" and not self.microsoft_app_tenant_id:
            raise ValueError("MICROSOFT_APP_TYPE=SingleTenant: also set MICROSOFT_APP_TENANT_ID (the bot's Entra tenant)")
        if self.teams_team_id and not (self.microsoft_app_id and self.microsoft_app_tenant_id):
            raise ValueError("TEAMS_TEAM_ID is set: deal rooms in Teams also need MICROSOFT_APP_ID, "
                             "MICROSOFT_APP_PASSWORD and MICROSOFT_APP_TENANT_ID (Graph tokens are per tenant)")
        return self

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def teams_enabled(self) -> bool:
        return self.microsoft_app_id is not None


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, turning pydantic's report into one actionable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for e in error.errors():
            where = "_".join(str(p) for p in e["loc"]).upper() or "settings"
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise SettingsError("Dealbot's configuration is not valid:\n  " + "\n  ".join(problems)) from None


def room_settings(settings: Settings) -> RoomSettings:
    """The deal-room part of the settings, as `deal_rooms` takes it."""
    return RoomSettings(
        policy=RoomPolicy.of(settings.deal_room_min_amount, settings.deal_room_min_amounts, settings.deal_room_stages),
        template=settings.deal_room_name_template, private=settings.deal_room_private,
        invite_manager=settings.deal_room_invite_manager,
        archive_delay=timedelta(hours=settings.deal_room_archive_delay_hours),
        group_window=timedelta(seconds=settings.deal_room_update_group_seconds),
    )


def digest_settings(settings: Settings) -> DigestSettings:
    return DigestSettings(default_zone=settings.digest_default_tz, grace=timedelta(hours=settings.digest_grace_hours),
                          content=Options(stale_days=settings.digest_stale_days,
                                          amount_change_percent=settings.digest_amount_change_percent))


def capture_settings(settings: Settings) -> CaptureSettings:
    return CaptureSettings(mode=settings.capture_mode, reaction=settings.capture_reaction)

"""All configuration in one typed object, read from the environment (and `.env`) at start-up.

Validation happens once, here, with messages that say what to set instead, so a misconfigured
server refuses to start rather than failing on the first request.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    graph_api_url: str = "https://graph.microsoft.com/v1.0/"
    teams_team_id: str | None = None
    deal_room_min_amount: Decimal = Field(default=Decimal(100_000), ge=0)
    deal_room_stages: Annotated[list[str], NoDecode] = Field(default_factory=list)
    deal_room_private: bool = True
    dealbot_api_token: SecretStr | None = None
    digest_default_tz: str = "UTC"
    digest_stale_days: int = Field(default=14, ge=1)
    capture_mode: Literal["suggest", "auto", "explicit"] = "suggest"
    capture_bot_messages: bool = False
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

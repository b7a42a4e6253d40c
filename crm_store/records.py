"""What source systems send: one validated record type per kind, shared by the API and CSV import.

Unknown fields are refused (a typo in a field name must not silently drop data), strings are
trimmed and bounded, amounts are decimals, dates are ISO dates. The REST API's OpenAPI document
is generated from these models, so it always matches what the server accepts.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# Text may not hold NUL (PostgreSQL refuses it); the patterns are checked by pydantic-core.
TEXT = r"^[^\x00]*$"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300, pattern=TEXT)]
ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128,
                                              pattern=r"^[^\s/?#]+$")]
Email = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=320,
                                         pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")]
Short = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200, pattern=TEXT)]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserRecord(Record):
    name: Name
    role: Literal["rep", "manager", "admin"] = "rep"
    manager_email: Email | None = None
    time_zone: Short | None = None
    slack_user_id: Annotated[str, StringConstraints(max_length=32, pattern=TEXT)] | None = None
    teams_aad_id: Annotated[str, StringConstraints(max_length=64, pattern=TEXT)] | None = None

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin") from None
        return value or None


class AccountRecord(Record):
    name: Name
    domain: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=255, pattern=TEXT)] | None = None
    industry: Short | None = None
    owner_email: Email | None = None
    source_updated_at: datetime | None = None


class ContactRecord(Record):
    name: Name
    email: Email | None = None
    title: Short | None = None
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=TEXT)] | None = None
    account_external_id: ExternalId
    source_updated_at: datetime | None = None


class OpportunityRecord(Record):
    name: Name
    account_external_id: ExternalId
    amount: Annotated[Decimal, Field(ge=0, le=Decimal("9999999999999999.99"), decimal_places=2)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_upper=True)]
    stage: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=TEXT)]
    close_date: date | None = None
    owner_email: Email
    team_emails: list[Email] = Field(default_factory=list, max_length=100)
    status: Literal["open", "won", "lost"] = "open"
    probability: Annotated[int, Field(ge=0, le=100)] | None = None
    source_updated_at: datetime | None = None


def as_utc(value: datetime | None) -> datetime | None:
    """Source timestamps without a zone are taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


Kind = Literal["users", "accounts", "contacts", "opportunities"]
RECORDS: dict[str, type[Record]] = {
    "users": UserRecord, "accounts": AccountRecord, "contacts": ContactRecord, "opportunities": OpportunityRecord,
}
KEY_FIELD = {"users": "email", "accounts": "external_id", "contacts": "external_id", "opportunities": "external_id"}

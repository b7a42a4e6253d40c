"""SQLAlchemy 2 models for everything Dealbot stores.

Every "exactly once" in the product is a unique constraint here, so that the claim is the same
code on SQLite and PostgreSQL: one room per opportunity per platform, one timeline entry per
source message, one digest per subscription per period, one processing per platform event,
one outbox row per idempotency key.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite has no timezone type; without this, values would come back naive and compare wrongly
    with aware ones.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        """One function per dialect (not a chain): bulk writes bind hundreds of thousands of these."""
        sqlite = dialect.name == "sqlite"
        last: list[Any] = [None, None]  # a bulk write binds the same "now" many times: remember it

        def process(value: datetime | None) -> Any:
            if value is None:
                return None
            if value is last[0]:
                return last[1]
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store; use timezone-aware UTC")
            utc = value.astimezone(timezone.utc)
            # SQLite keeps timestamps as text, in the format SQLAlchemy's DATETIME reads back.
            out = utc.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else utc
            last[0], last[1] = value, out
            return out

        return process

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# Deterministic constraint names keep Alembic migrations identical on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Role(str, enum.Enum):
    rep = "rep"
    manager = "manager"
    admin = "admin"


class DealStatus(str, enum.Enum):
    open = "open"
    won = "won"
    lost = "lost"


class Platform(str, enum.Enum):
    slack = "slack"
    teams = "teams"
    shell = "shell"


MONEY = Numeric(18, 2, asdecimal=True)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)


class User(Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.rep.value)
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    time_zone: Mapped[str | None] = mapped_column(String(64))
    slack_user_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    teams_aad_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    erased_at: Mapped[datetime | None]

    manager: Mapped[User | None] = relationship(remote_side=[id])


class Account(Timestamps, Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    domain: Mapped[str | None] = mapped_column(String(255), index=True)
    industry: Mapped[str | None] = mapped_column(String(120))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    source_updated_at: Mapped[datetime | None]

    owner: Mapped[User | None] = relationship()


class Contact(Timestamps, Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(64))
    erased_at: Mapped[datetime | None]
    source_updated_at: Mapped[datetime | None]

    account: Mapped[Account | None] = relationship()


class Opportunity(Timestamps, Base):
    __tablename__ = "opportunities"
    __table_args__ = (Index("ix_opportunities_owner_status", "owner_id", "status"),)  # a team's open deals

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    stage: Mapped[str] = mapped_column(String(64))
    probability: Mapped[int | None] = mapped_column(Integer)
    close_date: Mapped[date | None] = mapped_column(Date, index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(8), default=DealStatus.open.value, index=True)
    closed_at: Mapped[datetime | None]
    source_updated_at: Mapped[datetime | None]

    account: Mapped[Account] = relationship()
    owner: Mapped[User] = relationship()
    team: Mapped[list[DealTeamMember]] = relationship(back_populates="opportunity")


class DealTeamMember(Base):
    __tablename__ = "deal_team_members"
    __table_args__ = (UniqueConstraint("opportunity_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str | None] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)

    opportunity: Mapped[Opportunity] = relationship(back_populates="team")
    user: Mapped[User] = relationship()


class OpportunityHistory(Base):
    """One row per real change of a tracked field (stage, amount, close date, owner, status, team)."""

    __tablename__ = "opportunity_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id", ondelete="CASCADE"), index=True)
    field: Mapped[str] = mapped_column(String(32))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str | None] = mapped_column(String(32))


class DealRoom(Base):
    __tablename__ = "deal_rooms"
    __table_args__ = (
        UniqueConstraint("opportunity_id", "platform"),
        UniqueConstraint("platform", "channel_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str | None] = mapped_column(String(128))
    channel_name: Mapped[str | None] = mapped_column(String(128))
    # claimed -> creating -> active -> closed (archive scheduled) -> archived; "left" when people
    # archived it by hand (respected), "cancelled" when the deal closed before the channel existed.
    status: Mapped[str] = mapped_column(String(16), default="claimed", index=True)
    pinned_message_ref: Mapped[str | None] = mapped_column(String(128))
    conversation_ref: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None]
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # /crm room, by hand
    renamed_by_hand: Mapped[bool] = mapped_column(default=False)
    announced_through: Mapped[int | None]  # the last timeline entry id posted into the room
    listed_absent: Mapped[list[int]] = mapped_column(JSON, default=list)  # people said to be off-platform

    opportunity: Mapped[Opportunity] = relationship()


class TranscriptMessage(Base):
    __tablename__ = "transcript_messages"
    __table_args__ = (UniqueConstraint("platform", "channel_id", "message_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deal_room_id: Mapped[int] = mapped_column(ForeignKey("deal_rooms.id", ondelete="CASCADE"), index=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str] = mapped_column(String(128))
    message_ref: Mapped[str] = mapped_column(String(128))
    thread_ref: Mapped[str | None] = mapped_column(String(128))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    author_platform_id: Mapped[str | None] = mapped_column(String(128))
    text: Mapped[str | None] = mapped_column(Text)
    previous_versions: Mapped[list[Any] | None] = mapped_column(JSON)
    files: Mapped[list[Any] | None] = mapped_column(JSON)
    permalink: Mapped[str | None] = mapped_column(String(500))
    posted_at: Mapped[datetime] = mapped_column(index=True)
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    purged_at: Mapped[datetime | None]


class TimelineEntry(Base):
    """A typed entry on a deal's timeline.

    `(source_platform, source_ref)` is unique, so a message captured twice (retries, reactions,
    the shortcut) still yields one entry; entries that do not come from a message leave it NULL.
    """

    __tablename__ = "timeline_entries"
    __table_args__ = (
        UniqueConstraint("source_platform", "source_ref"),
        Index("ix_timeline_entries_opp_time", "opportunity_id", "occurred_at"),
        Index("ix_timeline_entries_opp_kind_time", "opportunity_id", "kind", "occurred_at"),  # a deal's decisions
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(ForeignKey("opportunities.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    text: Mapped[str | None] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    source_platform: Mapped[str | None] = mapped_column(String(16))
    source_ref: Mapped[str | None] = mapped_column(String(256))
    permalink: Mapped[str | None] = mapped_column(String(500))
    data: Mapped[dict[str, Any] | None]
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retracted_at: Mapped[datetime | None]

    author: Mapped[User | None] = relationship()


class DigestSubscription(Base):
    """A manager's digest schedule. `next_due_at` is when the scheduler looks at it next (any
    replica); `time_zone` NULL follows the user's zone, else `DIGEST_DEFAULT_TZ`."""

    __tablename__ = "digest_subscriptions"
    __table_args__ = (Index("ix_digest_subscriptions_due", "enabled", "next_due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    cadence: Mapped[str] = mapped_column(String(8))
    local_time: Mapped[str] = mapped_column(String(5), default="08:00")
    weekday: Mapped[int | None] = mapped_column(Integer)
    time_zone: Mapped[str | None] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    platform: Mapped[str] = mapped_column(String(16), default="slack", server_default="slack")
    next_due_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship()


class DigestRun(Base):
    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("subscription_id", "period_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("digest_subscriptions.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="claimed")
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    # What the digest covers: (window_start, window_end]; the next one starts where this ends.
    window_start: Mapped[datetime | None]
    window_end: Mapped[datetime | None]
    snapshot: Mapped[dict[str, Any] | None]  # the pipeline by stage it showed
    message_ref: Mapped[str | None] = mapped_column(String(128))  # posted: a retry does not post again
    file_ref: Mapped[str | None] = mapped_column(String(128))  # the chart, uploaded

    subscription: Mapped[DigestSubscription] = relationship()


class OutboxItem(Base):
    """A side effect on a chat platform, done exactly once thanks to its idempotency key."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(256), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
    slot_at: Mapped[datetime | None]  # the paced call's booked time (see RateBucket)


class RateBucket(Base):
    """The pace of one rate-limited platform call, shared by every replica: the next free slot,
    and the pause a 429 asked for. Slots are booked in a locked read-modify-write."""

    __tablename__ = "rate_buckets"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_free_at: Mapped[datetime]
    paused_until: Mapped[datetime | None]


class ProcessedEvent(Base):
    """A platform event id seen once; inserting it is the claim that makes retries harmless."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("platform", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    processed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ConversationRef(Base):
    """How to reach someone or somewhere later, as the platform handed it over (Teams: a
    conversation reference with its service URL and tenant), for proactive messages."""

    __tablename__ = "conversation_refs"
    __table_args__ = (UniqueConstraint("platform", "scope", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))  # "user" (a 1:1 chat, by AAD id) or "team" (by team id)
    key: Mapped[str] = mapped_column(String(128))
    reference: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(320))
    via: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any] | None]

"""The tables. One Alembic chain creates them (store/migrations)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from imagine.states import DeliveryStatus, LedgerKind, TaskStatus
from imagine.store.types import StatusText, UTCDateTime

# Named constraints: SQLite batch migrations can only alter what has a name.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TASK_STATUS = StatusText(TaskStatus)
# None is SQL NULL, not the JSON text 'null' (SQLAlchemy's default on PostgreSQL), so that
# `IS NULL` means "not set" on both engines.
NullableJSON = JSON(none_as_null=True)
DELIVERY_STATUS = StatusText(DeliveryStatus)
LEDGER_KIND = StatusText(LedgerKind)

# BIGINT on PostgreSQL, INTEGER (rowid alias, so autoincrementing) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Signs the account's webhook deliveries (Standard Webhooks `whsec_...`); made on first use.
    Column("webhook_secret", String(64), nullable=True),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    # The operator's lists, newest first (keyset-paged on created_at, then id).
    Index("ix_accounts_created", "created_at", "id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("kind", LEDGER_KIND, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("task_id", String(32), nullable=True),
    Column("note", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # A task is debited once and refunded at most once, whatever races happen above.
    UniqueConstraint("task_id", "kind", name="uq_ledger_task_kind"),
    CheckConstraint(LEDGER_KIND.check("kind"), name="kind_known"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False),
    Column("api_key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(64), nullable=False),
    Column("status", TASK_STATUS, nullable=False),
    Column("request", JSON, nullable=False),
    Column("callback_url", Text, nullable=True),
    Column("public", Boolean, nullable=False),
    Column("credits", Integer, nullable=False),
    Column("refunded", Boolean, nullable=False),
    Column("source_task_id", String(32), nullable=True),
    Column("provider", String(32), nullable=False),
    Column("upstream_id", String(200), nullable=True),
    Column("provider_state", NullableJSON, nullable=True),
    Column("result_urls", NullableJSON, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("checked_at", UTCDateTime, nullable=True),
    Column("next_check_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # The secret in the callback URL an upstream is given, and what its callback said.
    Column("callback_token", String(64), nullable=True),
    Column("upstream_callback", NullableJSON, nullable=True),
    # The worker's own bookkeeping, apart from the provider's state: the routes tried
    # before submission (route -> attempt count when the task moved to it), and result
    # URLs known but not yet copied (so a retry copies instead of asking again).
    Column("routes_tried", NullableJSON, nullable=True),
    Column("results_to_copy", NullableJSON, nullable=True),
    # How far the provider says an unfinished task has got, 0-100, where it says so.
    Column("progress", SmallInteger, nullable=True),
    # [width, height] of each image result (null for videos): a task chaining on this one
    # is refused at once when its result would be too large.
    Column("result_sizes", NullableJSON, nullable=True),
    CheckConstraint(TASK_STATUS.check(), name="status_known"),
    CheckConstraint("progress BETWEEN 0 AND 100", name="progress_percent"),
    Index("ix_tasks_due", "status", "next_check_at"),
    Index("ix_tasks_account_created", "account_id", "created_at"),
    Index("ix_tasks_gallery", "public", "status", "created_at"),
    Index("ix_tasks_created", "created_at", "id"),
)

# The webhook outbox: a delivery is written in the transaction that ends its task, so a
# crash can't lose one; senders claim due rows with a lease, like tasks.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("task_id", String(32), ForeignKey("tasks.id"), nullable=False, index=True),
    Column("account_id", String(32), ForeignKey("accounts.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", DELIVERY_STATUS, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    CheckConstraint(DELIVERY_STATUS.check(), name="delivery_status_known"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_account", "account_id", "created_at"),
    Index("ix_webhook_deliveries_created", "created_at", "id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "delivery_id", String(40), ForeignKey("webhook_deliveries.id"), nullable=False, index=True
    ),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("duration_ms", Integer, nullable=False),
)

# Idempotency-Key of POST /api/generate: the same key and body give back the same task.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", String(32), ForeignKey("accounts.id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("task_id", String(32), ForeignKey("tasks.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

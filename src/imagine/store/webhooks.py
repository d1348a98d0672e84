"""The webhook outbox: deliveries, their attempts, and each account's signing secret."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update

from imagine.states import DeliveryStatus
from imagine.store.db import Tx
from imagine.store.query import Cursor, Query, cursor_params, equals_if_given, older_than_cursor
from imagine.store.schema import accounts, webhook_attempts, webhook_deliveries
from imagine.store.types import UTCDateTime
from imagine.store.wakeups import Due


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    task_id: str
    account_id: str
    url: str
    payload: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: str
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


_insert = Query(
    insert(webhook_deliveries).values(
        {name: bindparam(name) for name in DeliveryRow.__dataclass_fields__}
    )
)
_now = bindparam("now", type_=UTCDateTime)
_chosen = (
    select(webhook_deliveries.c.id)
    .where(
        webhook_deliveries.c.status == DeliveryStatus.PENDING,
        webhook_deliveries.c.next_attempt_at <= _now,
        or_(
            webhook_deliveries.c.lease_expires_at.is_(None),
            webhook_deliveries.c.lease_expires_at < _now,
        ),
    )
    .order_by(webhook_deliveries.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_lease: dict[str, Any] = {
    "lease_owner": bindparam("worker_id"),
    "lease_expires_at": bindparam("lease_until"),
}
_picked = webhook_deliveries.c.id.in_(_chosen.scalar_subquery())
# As for tasks (store/tasks.py `_claim`): on PostgreSQL the pick is a CTE so that it runs
# once; rescanned as a subquery it leased every due delivery, whatever the limit.
_pick = _chosen.cte("picked")
_claim = Query(
    update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id.in_(select(_pick.c.id)),
        webhook_deliveries.c.status == DeliveryStatus.PENDING,
    )
    .values(_lease)
    .returning(*webhook_deliveries.c),
    # As for tasks: SQLite has one writer, and the outer test would make it scan.
    sqlite=update(webhook_deliveries)
    .where(_picked)
    .values(_lease)
    .returning(*webhook_deliveries.c),
)
_finish_attempt = Query(
    update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id == bindparam("delivery_id"),
        webhook_deliveries.c.lease_owner == bindparam("worker_id"),
    )
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_attempt_at"),
        delivered_at=bindparam("delivered_at"),
        updated_at=bindparam("attempted_at"),
        lease_owner=None,
        lease_expires_at=None,
    )
)
_insert_attempt = Query(
    insert(webhook_attempts).values(
        {name: bindparam(name) for name in AttemptRow.__dataclass_fields__}
    )
)
_listed = (
    select(webhook_deliveries.c.id)
    .where(
        webhook_deliveries.c.account_id == bindparam("account_id"),
        equals_if_given(webhook_deliveries.c.task_id, "task_id"),
    )
    .order_by(webhook_deliveries.c.created_at.desc())
    .limit(bindparam("limit"))
)
_deliveries_listed = Query(
    select(webhook_deliveries)
    .where(webhook_deliveries.c.id.in_(_listed.scalar_subquery()))
    .order_by(webhook_deliveries.c.created_at.desc())
)
_attempts_listed = Query(
    select(*(webhook_attempts.c[name] for name in AttemptRow.__dataclass_fields__))
    .where(webhook_attempts.c.delivery_id.in_(_listed.scalar_subquery()))
    .order_by(webhook_attempts.c.id)
)
_secret = Query(select(accounts.c.webhook_secret).where(accounts.c.id == bindparam("account_id")))
_set_secret = Query(
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(webhook_secret=bindparam("secret"))
)
_set_secret_if_none = Query(
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"), accounts.c.webhook_secret.is_(None))
    .values(webhook_secret=bindparam("secret"))
)


async def insert_delivery(tx: Tx, delivery: DeliveryRow) -> None:
    await tx.run(_insert, asdict(delivery))


async def claim_due(
    tx: Tx, *, worker_id: str, now: datetime, lease_until: datetime, limit: int
) -> list[DeliveryRow]:
    rows = await tx.all(
        _claim, {"worker_id": worker_id, "now": now, "lease_until": lease_until, "limit": limit}
    )
    return [DeliveryRow(**row) for row in rows]


async def record_attempt(
    tx: Tx,
    delivery: DeliveryRow,
    worker_id: str,
    *,
    attempt: AttemptRow,
    status: DeliveryStatus,
    next_attempt_at: datetime,
) -> bool:
    """Store one attempt and the delivery's new state; False when the lease was lost."""
    changed = await tx.run(
        _finish_attempt,
        {
            "delivery_id": delivery.id,
            "worker_id": worker_id,
            "status": status,
            "attempts": delivery.attempts + 1,
            "next_attempt_at": next_attempt_at,
            "delivered_at": attempt.attempted_at if status is DeliveryStatus.DELIVERED else None,
            "attempted_at": attempt.attempted_at,
        },
    )
    if changed != 1:
        return False
    await tx.run(
        _insert_attempt,
        {name: getattr(attempt, name) for name in AttemptRow.__dataclass_fields__},
    )
    return True


def _with_attempts(
    deliveries: list[DeliveryRow], rows: list[dict[str, Any]]
) -> list[tuple[DeliveryRow, list[AttemptRow]]]:
    """Each delivery with its attempts (rows of the attempts table, oldest first)."""
    attempts: dict[str, list[AttemptRow]] = {delivery.id: [] for delivery in deliveries}
    for row in rows:
        attempts.setdefault(row["delivery_id"], []).append(AttemptRow(**row))
    return [(delivery, attempts[delivery.id]) for delivery in deliveries]


async def list_deliveries(
    tx: Tx, account_id: str, *, task_id: str | None, limit: int
) -> list[tuple[DeliveryRow, list[AttemptRow]]]:
    """The account's newest deliveries (of one task, if given), each with its attempts."""
    params = {"account_id": account_id, "task_id": task_id, "limit": limit}
    deliveries = [DeliveryRow(**row) for row in await tx.all(_deliveries_listed, params)]
    return _with_attempts(deliveries, await tx.all(_attempts_listed, params))


# -- the operator's view: every account's deliveries, one delivery, a retry -----------

_ATTEMPT_COLUMNS = tuple(webhook_attempts.c[name] for name in AttemptRow.__dataclass_fields__)
_DRIVING = {
    "task": webhook_deliveries.c.task_id,
    "account": webhook_deliveries.c.account_id,
}


def _every_delivery(driving: str | None) -> tuple[Query, Query]:
    """The page of deliveries and the attempts of those on it, in two statements that
    pick the page alike (run in one snapshot). A filter by task or by account, where one
    is given, leads, so that its index is read; else ix_webhook_deliveries_created."""
    filters = [
        column == bindparam(f"{name}_id")
        if name == driving
        else equals_if_given(column, f"{name}_id")
        for name, column in _DRIVING.items()
    ]
    page = (
        select(webhook_deliveries.c.id)
        .where(
            *filters,
            equals_if_given(webhook_deliveries.c.status, "status"),
            older_than_cursor(webhook_deliveries.c.created_at, webhook_deliveries.c.id),
        )
        .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id.desc())
        .limit(bindparam("limit"))
    )
    deliveries = Query(
        select(webhook_deliveries)
        .where(webhook_deliveries.c.id.in_(page.scalar_subquery()))
        .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id.desc())
    )
    attempts = Query(
        select(*_ATTEMPT_COLUMNS)
        .where(webhook_attempts.c.delivery_id.in_(page.scalar_subquery()))
        .order_by(webhook_attempts.c.id)
    )
    return deliveries, attempts


_every_delivery_by = {driving: _every_delivery(driving) for driving in (*_DRIVING, None)}
_delivery = Query(
    select(webhook_deliveries).where(webhook_deliveries.c.id == bindparam("delivery_id"))
)
_attempts_of = Query(
    select(*_ATTEMPT_COLUMNS)
    .where(webhook_attempts.c.delivery_id == bindparam("delivery_id"))
    .order_by(webhook_attempts.c.id)
)
# Not a delivered one; a leased one keeps its lease, so the attempt in flight is still
# the only one and records its outcome as usual.
_retry = Query(
    update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id == bindparam("delivery_id"),
        webhook_deliveries.c.status != DeliveryStatus.DELIVERED,
    )
    .values(status=DeliveryStatus.PENDING, next_attempt_at=_now, updated_at=_now)
)


async def every_delivery(
    tx: Tx,
    *,
    status: DeliveryStatus | None,
    task_id: str | None,
    account_id: str | None,
    before: Cursor | None,
    limit: int,
) -> list[tuple[DeliveryRow, list[AttemptRow]]]:
    """Deliveries of every account newest first (filtered), each with its attempts."""
    driving = "task" if task_id is not None else "account" if account_id is not None else None
    deliveries_query, attempts_query = _every_delivery_by[driving]
    params = {
        "status": status,
        "task_id": task_id,
        "account_id": account_id,
        **cursor_params(before, limit),
    }
    deliveries = [DeliveryRow(**row) for row in await tx.all(deliveries_query, params)]
    return _with_attempts(deliveries, await tx.all(attempts_query, params))


async def get_delivery(tx: Tx, delivery_id: str) -> tuple[DeliveryRow, list[AttemptRow]] | None:
    row = await tx.one(_delivery, {"delivery_id": delivery_id})
    if row is None:
        return None
    delivery = DeliveryRow(**row)
    (found,) = _with_attempts([delivery], await tx.all(_attempts_of, {"delivery_id": delivery_id}))
    return found


async def retry_delivery(tx: Tx, delivery_id: str, now: datetime) -> bool:
    """failed, gone or pending → pending, due `now` (its attempts kept); False when it is
    delivered, or unknown. The senders are woken once this commits."""
    if await tx.run(_retry, {"delivery_id": delivery_id, "now": now}) != 1:
        return False
    tx.announce(Due.DELIVERY)
    return True


async def get_secret(tx: Tx, account_id: str) -> str | None:
    row = await tx.one(_secret, {"account_id": account_id})
    return None if row is None else row["webhook_secret"]


async def set_secret(tx: Tx, account_id: str, secret: str, *, only_if_unset: bool) -> None:
    await tx.run(
        _set_secret_if_none if only_if_unset else _set_secret,
        {"account_id": account_id, "secret": secret},
    )

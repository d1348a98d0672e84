"""The operator's console: every account's tasks, ledgers and webhook deliveries, the
queue, and a delivery tried again. No account scoping here: /admin is behind its token.

Lists are newest first and keyset-paged like the caller's history (services/listing.py):
the cursor names the last row shown, so a page is one index range at any depth.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from imagine.clock import iso_z, utc_now
from imagine.errors import (
    AccountNotFound,
    DeliveryAlreadyDelivered,
    DeliveryNotFound,
    InvalidInput,
    TaskNotFound,
)
from imagine.netguard import url_without_secrets
from imagine.schemas import (
    AccountPage,
    AdminDelivery,
    AdminDeliveryPage,
    LedgerPage,
    QueueFigures,
    TaskAdmin,
    TaskAdminPage,
)
from imagine.services.listing import (
    check_model,
    check_status,
    decode_cursor,
    encode_cursor,
    parse_limit,
)
from imagine.services.webhooks import delivery_view
from imagine.states import DeliveryStatus, TaskStatus
from imagine.store import accounts as accounts_repo
from imagine.store import gauges
from imagine.store import tasks as tasks_repo
from imagine.store import webhooks as webhooks_repo
from imagine.store.db import Database, Tx
from imagine.store.tasks import TaskRow
from imagine.store.webhooks import AttemptRow, DeliveryRow

DEFAULT_LIMIT = 50
_ACCOUNT_ID = re.compile(r"acc_[0-9a-f]{1,40}")
_LEDGER_ID = re.compile(r"[0-9]{1,18}")
_DELIVERY_ID = re.compile(r"msg_[0-9a-f]{1,40}")
_DELIVERY_STATUSES = tuple(DeliveryStatus)
_SECRET_NAME = re.compile(r"secret|token|passw|api[_-]?key|auth|signature|credential", re.I)


def limit_of(value: str | None) -> int:
    return parse_limit(value, DEFAULT_LIMIT)


def parse_moment(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time with its offset (`2026-12-02T10:00:00Z`), as UTC."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{name}: not an ISO 8601 time; give e.g. 2026-12-02T10:00:00Z "
            "(in a URL, write + as %2B)"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name}: give the time with its offset, e.g. 2026-12-02T10:00:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{name}: out of range") from None


# -- accounts and their ledgers --------------------------------------------------------


async def accounts_page(db: Database, *, cursor: str | None, limit: int) -> AccountPage:
    before = decode_cursor(cursor, _ACCOUNT_ID)
    rows = await db.read(lambda tx: accounts_repo.accounts_page(tx, before=before, limit=limit + 1))
    shown = rows[:limit]
    return {
        "items": [
            {
                "account_id": row.id,
                "name": row.name,
                "balance": row.balance,
                "created_at": iso_z(row.created_at),
                "keys": row.keys,
                "active_keys": row.active_keys,
            }
            for row in shown
        ],
        "next_cursor": (
            encode_cursor(shown[-1].created_at, shown[-1].id) if len(rows) > limit else None
        ),
    }


async def ledger_page(
    db: Database, account_id: str, *, cursor: str | None, limit: int
) -> LedgerPage:
    before = decode_cursor(cursor, _LEDGER_ID)
    before_id = None if before is None else int(before[1])

    async def read(tx: Tx) -> list[accounts_repo.LedgerRow] | None:
        if not await accounts_repo.account_exists(tx, account_id):
            return None
        return await accounts_repo.ledger_page(tx, account_id, before_id=before_id, limit=limit + 1)

    rows = await db.read(read)
    if rows is None:
        raise AccountNotFound(account_id)
    shown = rows[:limit]
    return {
        "items": [
            {
                "id": row.id,
                "kind": row.kind,
                "amount": row.amount,
                "balance_after": row.balance_after,
                "task_id": row.task_id,
                "note": row.note,
                "created_at": iso_z(row.created_at),
            }
            for row in shown
        ],
        "next_cursor": (
            encode_cursor(shown[-1].created_at, str(shown[-1].id)) if len(rows) > limit else None
        ),
    }


# -- tasks -----------------------------------------------------------------------------


async def tasks_page(
    db: Database,
    *,
    status: str | None,
    model: str | None,
    provider: str | None,
    account_id: str | None,
    created_after: str | None,
    created_before: str | None,
    cursor: str | None,
    limit: int,
) -> TaskAdminPage:
    wanted = check_status(status)
    check_model(model)
    after = parse_moment("created_after", created_after)
    until = parse_moment("created_before", created_before)
    before = decode_cursor(cursor)
    if until is not None:
        # Before the cursor and before `until`: whichever comes first, newest first.
        before = min(before, (until, "")) if before is not None else (until, "")
    rows = await db.read(
        lambda tx: tasks_repo.every_task(
            tx,
            status=wanted,
            model=model,
            provider=provider or None,
            account_id=account_id or None,
            after=after,
            before=before,
            limit=limit + 1,
        )
    )
    shown = rows[:limit]
    return {
        "items": [task_admin(row) for row in shown],
        "next_cursor": (
            encode_cursor(shown[-1].created_at, shown[-1].id) if len(rows) > limit else None
        ),
    }


async def task(db: Database, task_id: str) -> TaskAdmin:
    found = await db.read(lambda tx: tasks_repo.get_task(tx, task_id), snapshot=False)
    if found is None:
        raise TaskNotFound(task_id)
    return task_admin(found)


def task_admin(row: TaskRow) -> TaskAdmin:
    return {
        "task_id": row.id,
        "account_id": row.account_id,
        "model": row.model,
        "status": row.status,
        "provider": row.provider,
        "upstream_id": row.upstream_id,
        "provider_state": None if row.provider_state is None else shown_state(row.provider_state),
        "attempts": row.attempts,
        "error_message": row.error_message,
        "consumed_credits": 0 if row.refunded else row.credits,
        "refunded": row.refunded,
        # Stored sanitized (services/tasks/validation.py): what the status call shows.
        "request": row.request,
        "result_urls": row.result_urls or [],
        "created_at": iso_z(row.created_at),
        "completed_at": iso_z(row.finished_at) if row.finished_at else None,
        "next_check_at": (
            iso_z(row.next_check_at) if row.status is TaskStatus.IN_PROGRESS else None
        ),
    }


def shown_state(state: dict[str, Any]) -> dict[str, Any]:
    """A provider's state without what could be secret: keys named like secrets are
    left out, and URLs (an upstream's result links may be presigned) lose their
    credentials and query string."""
    return {key: _shown(value) for key, value in state.items() if not _SECRET_NAME.search(key)}


def _shown(value: Any) -> Any:
    if isinstance(value, dict):
        return shown_state(value)
    if isinstance(value, list):
        return [_shown(inner) for inner in value]
    if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
        return url_without_secrets(value)
    return value


# -- webhook deliveries ----------------------------------------------------------------


async def deliveries_page(
    db: Database,
    *,
    status: str | None,
    task_id: str | None,
    account_id: str | None,
    cursor: str | None,
    limit: int,
) -> AdminDeliveryPage:
    if status is not None and status not in _DELIVERY_STATUSES:
        raise InvalidInput("status: use one of " + ", ".join(_DELIVERY_STATUSES))
    wanted = None if status is None else DeliveryStatus(status)
    before = decode_cursor(cursor, _DELIVERY_ID)
    listed = await db.read(
        lambda tx: webhooks_repo.every_delivery(
            tx,
            status=wanted,
            task_id=task_id or None,
            account_id=account_id or None,
            before=before,
            limit=limit + 1,
        )
    )
    shown = listed[:limit]
    last = shown[-1][0] if shown else None
    return {
        "items": [admin_delivery(delivery, attempts) for delivery, attempts in shown],
        "next_cursor": (
            encode_cursor(last.created_at, last.id)
            if last is not None and len(listed) > limit
            else None
        ),
    }


def admin_delivery(delivery: DeliveryRow, attempts: list[AttemptRow]) -> AdminDelivery:
    return {**delivery_view(delivery, attempts), "account_id": delivery.account_id}


async def retry_delivery(db: Database, delivery_id: str) -> AdminDelivery:
    """A failed, gone or pending delivery becomes pending and due now, so a sender tries
    it at once (its earlier attempts are kept): 404 unknown, 409 delivered."""

    async def retry(tx: Tx) -> tuple[DeliveryRow, list[AttemptRow]]:
        found = await webhooks_repo.get_delivery(tx, delivery_id)
        if found is None:
            raise DeliveryNotFound(delivery_id)
        if found[0].status is DeliveryStatus.DELIVERED or not await webhooks_repo.retry_delivery(
            tx, delivery_id, utc_now()
        ):
            raise DeliveryAlreadyDelivered(delivery_id)
        retried = await webhooks_repo.get_delivery(tx, delivery_id)
        assert retried is not None
        return retried

    delivery, attempts = await db.write(retry)
    return admin_delivery(delivery, attempts)


# -- the queue -------------------------------------------------------------------------


async def queue(db: Database) -> QueueFigures:
    now = utc_now()
    row = await db.read(lambda tx: gauges.queue(tx, now, in_progress=True))
    assert row.in_progress is not None
    oldest = row.oldest_due_at
    return {
        "due": row.due,
        "in_progress": row.in_progress,
        "oldest_due_at": iso_z(oldest) if oldest is not None else None,
        "oldest_due_age_seconds": (
            round(max(0.0, (now - oldest).total_seconds()), 3) if oldest is not None else None
        ),
        "webhook_backlog": row.deliveries_due,
    }

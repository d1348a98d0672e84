"""Webhooks for `callback_url`: queued with the task's final state, signed per account."""

from __future__ import annotations

import secrets
from datetime import datetime

import orjson

from imagine.clock import iso_z
from imagine.errors import TaskNotFound
from imagine.netguard import url_without_secrets
from imagine.schemas import StatusData, WebhookDelivery
from imagine.states import DeliveryStatus
from imagine.store import tasks as tasks_repo
from imagine.store import webhooks as repo
from imagine.store.db import Database, Tx
from imagine.store.wakeups import Due
from imagine.store.webhooks import AttemptRow, DeliveryRow
from imagine.webhooks import new_secret

LISTED = 50


async def enqueue(
    tx: Tx, *, task_id: str, account_id: str, url: str, data: StatusData, now: datetime
) -> None:
    """Queue the delivery of a task's final status; called in the transaction that ends the
    task, so the two are stored together or not at all."""
    body = orjson.dumps({"code": 200, "message": "success", "data": data}).decode()
    await repo.insert_delivery(
        tx,
        DeliveryRow(
            id="msg_" + secrets.token_hex(16),
            task_id=task_id,
            account_id=account_id,
            url=url,
            payload=body,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_owner=None,
            lease_expires_at=None,
            created_at=now,
            updated_at=now,
            delivered_at=None,
        ),
    )
    tx.announce(Due.DELIVERY)


async def secret_of(db: Database, account_id: str) -> str:
    """The account's signing secret, made on first use."""

    async def get_or_make(tx: Tx) -> str:
        found = await repo.get_secret(tx, account_id)
        if found is None:
            await repo.set_secret(tx, account_id, new_secret(), only_if_unset=True)
            found = await repo.get_secret(tx, account_id)
        assert found is not None
        return found

    return await db.write(get_or_make)


async def rotate_secret(db: Database, account_id: str) -> str:
    """A new secret; deliveries from now on are signed with it."""
    secret = new_secret()
    await db.write(lambda tx: repo.set_secret(tx, account_id, secret, only_if_unset=False))
    return secret


async def deliveries_view(
    db: Database, account_id: str, task_id: str | None
) -> list[WebhookDelivery]:
    """The newest deliveries, each with its attempts; with `task_id`, only that task's
    (404 when the account has no such task)."""
    if task_id is not None:
        found = await db.read(lambda tx: tasks_repo.get_view(tx, task_id, account_id))
        if found is None:
            raise TaskNotFound(task_id)
    listed = await db.read(
        lambda tx: repo.list_deliveries(tx, account_id, task_id=task_id, limit=LISTED)
    )
    return [delivery_view(delivery, attempts) for delivery, attempts in listed]


def delivery_view(delivery: DeliveryRow, attempts: list[AttemptRow]) -> WebhookDelivery:
    """A delivery as its account (and the operator) sees it: the URL without secrets."""
    return {
        "id": delivery.id,
        "task_id": delivery.task_id,
        "url": url_without_secrets(delivery.url),
        "status": delivery.status,
        "attempts": [
            {
                "at": iso_z(attempt.attempted_at),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
            }
            for attempt in attempts
        ],
        "next_attempt_at": (
            iso_z(delivery.next_attempt_at) if delivery.status is DeliveryStatus.PENDING else None
        ),
        "created_at": iso_z(delivery.created_at),
        "delivered_at": iso_z(delivery.delivered_at) if delivery.delivered_at else None,
    }

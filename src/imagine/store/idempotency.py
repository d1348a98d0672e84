"""Idempotency keys: which task a key (with which body) created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select

from imagine.states import TaskStatus
from imagine.store.db import Tx
from imagine.store.query import Query
from imagine.store.schema import idempotency_keys, tasks

_find = Query(
    select(
        idempotency_keys.c.request_hash,
        idempotency_keys.c.task_id,
        idempotency_keys.c.created_at,
        tasks.c.status,
    )
    .select_from(idempotency_keys.join(tasks, tasks.c.id == idempotency_keys.c.task_id))
    .where(
        idempotency_keys.c.account_id == bindparam("account_id"),
        idempotency_keys.c.key == bindparam("key"),
    )
)
_insert = Query(
    insert(idempotency_keys).values(
        account_id=bindparam("account_id"),
        key=bindparam("key"),
        request_hash=bindparam("request_hash"),
        task_id=bindparam("task_id"),
        created_at=bindparam("now"),
    )
)
_forget = Query(
    delete(idempotency_keys).where(
        idempotency_keys.c.account_id == bindparam("account_id"),
        idempotency_keys.c.key == bindparam("key"),
    )
)


@dataclass(frozen=True, slots=True)
class EarlierRequest:
    """What a key already used created."""

    request_hash: str
    task_id: str
    created_at: datetime
    status: TaskStatus
    """The status of the task it created, now."""


async def find(tx: Tx, account_id: str, key: str) -> EarlierRequest | None:
    row = await tx.one(_find, {"account_id": account_id, "key": key})
    return None if row is None else EarlierRequest(**row)


async def remember(
    tx: Tx, account_id: str, key: str, request_hash: str, task_id: str, now: datetime
) -> None:
    await tx.run(
        _insert,
        {
            "account_id": account_id,
            "key": key,
            "request_hash": request_hash,
            "task_id": task_id,
            "now": now,
        },
    )


async def forget(tx: Tx, account_id: str, key: str) -> None:
    await tx.run(_forget, {"account_id": account_id, "key": key})

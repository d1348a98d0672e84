"""Task rows: insert, read, claim with a lease, and guarded updates.

Every write after creation is guarded (`status = 'IN_PROGRESS'` and, for workers, the
lease owner), so a worker that lost its lease or a task that already finished can't be
overwritten: the statement just matches no row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imagine.store.schema import tasks

IN_PROGRESS = "IN_PROGRESS"
SUCCESS = "SUCCESS"
FAILED = "FAILED"


@dataclass(slots=True)
class TaskRow:
    id: str
    account_id: str
    api_key_id: str
    model: str
    status: str
    request: dict[str, Any]
    callback_url: str | None
    public: bool
    credits: int
    refunded: bool
    source_task_id: str | None
    provider: str
    upstream_id: str | None
    provider_state: dict[str, Any] | None
    result_urls: list[str] | None
    error_message: str | None
    attempts: int
    checked_at: datetime | None
    next_check_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    deadline_at: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


async def insert_task(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(insert(tasks).values(**values))


async def get_task(
    conn: AsyncConnection, task_id: str, *, account_id: str | None = None
) -> TaskRow | None:
    query = select(tasks).where(tasks.c.id == task_id)
    if account_id is not None:
        query = query.where(tasks.c.account_id == account_id)
    row = (await conn.execute(query)).first()
    return None if row is None else TaskRow(**row._mapping)


async def claim(
    conn: AsyncConnection,
    *,
    worker_id: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    skip_locked: bool,
    task_id: str | None = None,
    checked_before: datetime | None = None,
) -> list[TaskRow]:
    """Lease up to `limit` unfinished tasks nobody holds.

    Without `task_id`: the due ones, oldest first (the worker). With `task_id`: that task,
    due or not, if its provider was last asked before `checked_before` (an inline refresh).
    """
    free = or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < now)
    candidates = select(tasks.c.id).where(tasks.c.status == IN_PROGRESS, free)
    if task_id is None:
        candidates = candidates.where(tasks.c.next_check_at <= now).order_by(tasks.c.next_check_at)
    else:
        candidates = candidates.where(tasks.c.id == task_id)
        if checked_before is not None:
            candidates = candidates.where(
                or_(tasks.c.checked_at.is_(None), tasks.c.checked_at <= checked_before)
            )
    candidates = candidates.limit(limit)
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(tasks)
        .where(tasks.c.id.in_(candidates.scalar_subquery()), tasks.c.status == IN_PROGRESS, free)
        .values(lease_owner=worker_id, lease_expires_at=lease_until)
        .returning(*tasks.c)
    )
    return [TaskRow(**row._mapping) for row in result]


async def update_leased(conn: AsyncConnection, task_id: str, worker_id: str, **values: Any) -> bool:
    """Write to a task this worker still holds; False when the lease was lost or it ended."""
    result = await conn.execute(
        update(tasks)
        .where(
            tasks.c.id == task_id,
            tasks.c.status == IN_PROGRESS,
            tasks.c.lease_owner == worker_id,
        )
        .values(**values)
    )
    return result.rowcount == 1


async def count_by_status(conn: AsyncConnection, account_id: str | None = None) -> dict[str, int]:
    query = select(tasks.c.status, func.count()).group_by(tasks.c.status)
    if account_id is not None:
        query = query.where(tasks.c.account_id == account_id)
    return {str(status): int(n) for status, n in await conn.execute(query)}

"""The queue as gauges see it: due tasks, the oldest one's wait, the webhook backlog.

One statement of three aggregates, each over the range of a `*_due` index (status, then
the due time), so a scrape reads the due rows' index entries and nothing else. The
operator's queue view adds a fourth, the unfinished tasks (the index's status range).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, or_, select

from imagine.states import DeliveryStatus, TaskStatus
from imagine.store.db import Tx
from imagine.store.query import Query
from imagine.store.schema import tasks, webhook_deliveries
from imagine.store.types import UTCDateTime

_now = bindparam("now", type_=UTCDateTime)
# As the worker's claim reads "due" (services/tasks/lifecycle.py `_claim_due`).
_task_due = (
    tasks.c.status == TaskStatus.IN_PROGRESS,
    or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < _now),
    tasks.c.next_check_at <= _now,
)
_delivery_due = (
    webhook_deliveries.c.status == DeliveryStatus.PENDING,
    or_(
        webhook_deliveries.c.lease_expires_at.is_(None),
        webhook_deliveries.c.lease_expires_at < _now,
    ),
    webhook_deliveries.c.next_attempt_at <= _now,
)
_figures = (
    select(func.count()).select_from(tasks).where(*_task_due).scalar_subquery().label("due"),
    select(func.min(tasks.c.next_check_at))
    .where(*_task_due)
    .scalar_subquery()
    .label("oldest_due_at"),
    select(func.count())
    .select_from(webhook_deliveries)
    .where(*_delivery_due)
    .scalar_subquery()
    .label("deliveries_due"),
)
_in_progress = (
    select(func.count())
    .select_from(tasks)
    .where(tasks.c.status == TaskStatus.IN_PROGRESS)
    .scalar_subquery()
    .label("in_progress")
)
_queue = {False: Query(select(*_figures)), True: Query(select(*_figures, _in_progress))}


@dataclass(frozen=True, slots=True)
class QueueRow:
    due: int
    oldest_due_at: datetime | None
    deliveries_due: int
    in_progress: int | None
    """Only when asked for (`queue(..., in_progress=True)`)."""


async def queue(tx: Tx, now: datetime, *, in_progress: bool = False) -> QueueRow:
    row = await tx.one(_queue[in_progress], {"now": now})
    assert row is not None  # an aggregate always has its one row
    return QueueRow(
        due=int(row["due"] or 0),
        oldest_due_at=row["oldest_due_at"],
        deliveries_due=int(row["deliveries_due"] or 0),
        in_progress=int(row["in_progress"] or 0) if in_progress else None,
    )

"""Reading task rows: one task, the status view, the caller's history, the gallery.

Every write to a task row is a named transition in services/tasks/lifecycle.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, or_, select

from imagine.states import TaskStatus
from imagine.store.db import Tx
from imagine.store.query import (
    START_OF_TIME,
    Batching,
    Cursor,
    Query,
    cursor_params,
    equals_if_given,
    older_than_cursor,
)
from imagine.store.schema import api_keys, tasks
from imagine.store.types import UTCDateTime


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    account_id: str
    api_key_id: str
    model: str
    status: TaskStatus
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
    callback_token: str | None
    upstream_callback: dict[str, Any] | None
    routes_tried: dict[str, int] | None
    """Before submission: each route tried, with the attempt count when the task moved
    to it (the worker's failover bookkeeping)."""
    results_to_copy: list[str] | None
    """Result URLs the provider reported that are not copied yet: a retry copies them
    instead of asking the provider again."""
    progress: int | None
    """How far the provider says the task has got, 0-100, where it says so."""
    result_sizes: list[list[int] | None] | None
    """[width, height] of each image result (None for a video), once it succeeded."""


@dataclass(frozen=True, slots=True)
class TaskView:
    """What the status call shows; read on its own because status is the hottest call."""

    id: str
    status: TaskStatus
    request: dict[str, Any]
    result_urls: list[str] | None
    refunded: bool
    credits: int
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    checked_at: datetime | None
    attempts: int
    """These two let a status call see, without a write, that no refresh is due."""
    progress: int | None

    @classmethod
    def of(cls, task: TaskRow) -> TaskView:
        return cls(**{name: getattr(task, name) for name in _VIEW_COLUMNS})


_VIEW_COLUMNS = tuple(TaskView.__dataclass_fields__)
_view_of_account = Query(
    select(*(tasks.c[name] for name in _VIEW_COLUMNS)).where(
        tasks.c.id == bindparam("task_id"), tasks.c.account_id == bindparam("account_id")
    )
)
# The polling hot path in one statement: the key (unrevoked) and, if it is one of the
# key's account's, the task. No row: an invalid key. A row without a task: not found.
# Polls that arrive together share a round trip, each finding its row by what it asked.
_view_for_key = Query(
    select(
        api_keys.c.id.label("_key_id"),
        api_keys.c.account_id.label("_account_id"),
        api_keys.c.key_hash,
        bindparam("task_id", type_=String).label("task_id"),
        *(tasks.c[name] for name in _VIEW_COLUMNS),
    )
    .select_from(
        api_keys.outerjoin(
            tasks,
            and_(tasks.c.id == bindparam("task_id"), tasks.c.account_id == api_keys.c.account_id),
        )
    )
    .where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)),
    batching=Batching(key=("key_hash", "task_id")),
)

_by_id = Query(select(tasks).where(tasks.c.id == bindparam("task_id")))
_by_id_of_account = Query(
    select(tasks).where(
        tasks.c.id == bindparam("task_id"), tasks.c.account_id == bindparam("account_id")
    )
)


async def get_task(tx: Tx, task_id: str, *, account_id: str | None = None) -> TaskRow | None:
    if account_id is None:
        row = await tx.one(_by_id, {"task_id": task_id})
    else:
        row = await tx.one(_by_id_of_account, {"task_id": task_id, "account_id": account_id})
    return None if row is None else TaskRow(**row)


async def get_view(tx: Tx, task_id: str, account_id: str) -> TaskView | None:
    row = await tx.one(_view_of_account, {"task_id": task_id, "account_id": account_id})
    return None if row is None else TaskView(**row)


@dataclass(frozen=True, slots=True)
class KeyAndView:
    """A valid key, and the task if the key's account has it."""

    key_id: str
    account_id: str
    view: TaskView | None


async def get_view_for_key(tx: Tx, key_hash: str, task_id: str) -> KeyAndView | None:
    """The key (None when it is unknown or revoked) and the task if its account has it."""
    row = await tx.one(_view_for_key, {"key_hash": key_hash, "task_id": task_id})
    if row is None:
        return None
    key_id, account_id = row.pop("_key_id"), row.pop("_account_id")
    del row["key_hash"], row["task_id"]
    return KeyAndView(key_id, account_id, None if row["id"] is None else TaskView(**row))


# -- lists: the caller's history and the public gallery, newest first, by keyset --------

_Cursor = tuple[datetime, str]
_before = or_(
    bindparam("before_at", type_=UTCDateTime) == None,  # noqa: E711 - SQL NULL test
    tasks.c.created_at < bindparam("before_at", type_=UTCDateTime),
    and_(
        tasks.c.created_at == bindparam("before_at", type_=UTCDateTime),
        tasks.c.id < bindparam("before_id", type_=String),
    ),
)
_newest_first = (tasks.c.created_at.desc(), tasks.c.id.desc())
_history = Query(
    select(tasks)
    .where(
        tasks.c.account_id == bindparam("account_id"),
        equals_if_given(tasks.c.status, "status"),
        equals_if_given(tasks.c.model, "model"),
        _before,
    )
    .order_by(*_newest_first)
    .limit(bindparam("limit"))
)
_gallery = Query(
    select(tasks.c.id, tasks.c.model, tasks.c.request, tasks.c.result_urls, tasks.c.created_at)
    .where(
        tasks.c.public.is_(True),
        tasks.c.status == TaskStatus.SUCCESS,
        equals_if_given(tasks.c.model, "model"),
        _before,
    )
    .order_by(*_newest_first)
    .limit(bindparam("limit"))
)


def _page(before: _Cursor | None, limit: int) -> dict[str, Any]:
    return {
        "before_at": before[0] if before else None,
        "before_id": before[1] if before else None,
        "limit": limit,
    }


async def history(
    tx: Tx,
    account_id: str,
    *,
    status: TaskStatus | None,
    model: str | None,
    before: _Cursor | None,
    limit: int,
) -> list[TaskRow]:
    rows = await tx.all(
        _history,
        {"account_id": account_id, "status": status, "model": model, **_page(before, limit)},
    )
    return [TaskRow(**row) for row in rows]


@dataclass(frozen=True, slots=True)
class GalleryRow:
    id: str
    model: str
    request: dict[str, Any]
    result_urls: list[str] | None
    created_at: datetime


async def gallery(
    tx: Tx, *, model: str | None, before: _Cursor | None, limit: int
) -> list[GalleryRow]:
    rows = await tx.all(_gallery, {"model": model, **_page(before, limit)})
    return [GalleryRow(**row) for row in rows]


# -- the operator's list: every account's tasks, filtered, newest first -----------------


def _every_task(*, of_account: bool) -> Query:
    # With an account, its equality leads, so that ix_tasks_account_created is read;
    # without, the range on created_at reads ix_tasks_created from the cursor on.
    account = [tasks.c.account_id == bindparam("account_id")] if of_account else []
    return Query(
        select(tasks)
        .where(
            *account,
            equals_if_given(tasks.c.status, "status"),
            equals_if_given(tasks.c.model, "model"),
            equals_if_given(tasks.c.provider, "provider"),
            tasks.c.created_at > bindparam("after", type_=UTCDateTime),
            older_than_cursor(tasks.c.created_at, tasks.c.id),
        )
        .order_by(*_newest_first)
        .limit(bindparam("limit"))
    )


_every_task_of = {True: _every_task(of_account=True), False: _every_task(of_account=False)}


async def every_task(
    tx: Tx,
    *,
    status: TaskStatus | None,
    model: str | None,
    provider: str | None,
    account_id: str | None,
    after: datetime | None,
    before: Cursor | None,
    limit: int,
) -> list[TaskRow]:
    """Tasks of every account (or of one) newest first: created after `after`, and
    before `before` in (created_at, id) order."""
    params = {
        "account_id": account_id,
        "status": status,
        "model": model,
        "provider": provider,
        "after": after or START_OF_TIME,
        **cursor_params(before, limit),
    }
    rows = await tx.all(_every_task_of[account_id is not None], params)
    return [TaskRow(**row) for row in rows]

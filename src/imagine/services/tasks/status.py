"""The status view: a task as its owner sees it, refreshed from its provider while it
runs, and final answers kept in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from imagine.clock import utc_now
from imagine.errors import TaskNotFound
from imagine.schemas import StatusData
from imagine.services.keys import Caller, authenticate_hash, invalid_key
from imagine.services.tasks.payloads import status_data
from imagine.states import TaskStatus
from imagine.store import tasks as repo
from imagine.store.db import Database
from imagine.store.tasks import TaskRow, TaskView

WAIT_POLL = 0.25
"""Seconds between looks at a task a `Prefer: wait` request is waiting for."""
FINISHED_CACHE_SIZE = 20_000
"""Status answers of finished tasks kept in memory (a few MB at most)."""

Refresh = Callable[[str], Awaitable[TaskRow | None]]
"""Asks a task's provider now (the worker's inline refresh); None when nothing came in time."""


class StatusReader:
    def __init__(
        self, db: Database, *, refresh: Refresh | None = None, refresh_interval: float = 1.0
    ) -> None:
        self._db = db
        self._refresh = refresh
        self._refresh_interval = timedelta(seconds=refresh_interval)
        self._finished: dict[str, tuple[str, StatusData]] = {}

    async def status(self, caller: Caller, task_id: str) -> TaskView:
        """The task; while it is in progress, refreshed from its provider first (bounded)."""
        view = await self._db.read(
            lambda tx: repo.get_view(tx, task_id, caller.account_id), snapshot=False
        )
        if view is None:
            # Another account's task answers exactly like a missing one.
            raise TaskNotFound(task_id)
        return await self._refreshed(view)

    async def data_for_key(self, key_hash: str, task_id: str) -> StatusData:
        """The status answer's data, authenticating the key in the same statement.

        This is what polling clients call in loops. A finished task's answer never changes
        (SUCCESS and FAILED are final), so it is kept in a bounded cache; the key is still
        checked against the database on every call, so a revoked key is refused at once.
        """
        cached = self._finished.get(task_id)
        if cached is not None:
            caller = await authenticate_hash(self._db, key_hash)
            if caller.account_id != cached[0]:
                raise TaskNotFound(task_id)
            return cached[1]
        found = await self._db.read(
            lambda tx: repo.get_view_for_key(tx, key_hash, task_id), snapshot=False
        )
        if found is None:
            raise invalid_key()
        if found.view is None:
            raise TaskNotFound(task_id)
        view = await self._refreshed(found.view)
        data = status_data(view)
        if view.status is not TaskStatus.IN_PROGRESS:
            self._remember_finished(task_id, found.account_id, data)
        return data

    async def wait_for(self, caller: Caller, task_id: str, seconds: float) -> StatusData | None:
        """The status data once the task ends, if it does within `seconds`; else None."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            view = await self.status(caller, task_id)
            if view.status is not TaskStatus.IN_PROGRESS:
                return status_data(view)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            await asyncio.sleep(min(WAIT_POLL, left))

    def _remember_finished(self, task_id: str, account_id: str, data: StatusData) -> None:
        finished = self._finished
        if len(finished) >= FINISHED_CACHE_SIZE:
            del finished[next(iter(finished))]  # the oldest entry
        finished[task_id] = (account_id, data)

    async def _refreshed(self, view: TaskView) -> TaskView:
        if (
            view.status is TaskStatus.IN_PROGRESS
            and self._refresh is not None
            and self._refresh_due(view)
        ):
            refreshed = await self._refresh(view.id)
            if refreshed is not None:
                return TaskView.of(refreshed)
        return view

    def _refresh_due(self, view: TaskView) -> bool:
        """Whether the provider may be asked now; checked again, atomically, by the claim.
        Answering no here costs a status call no write (clients poll unfinished tasks)."""
        if view.attempts > 0:
            return False  # backing off after an upstream error
        return view.checked_at is None or utc_now() - view.checked_at >= self._refresh_interval

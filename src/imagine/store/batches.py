"""Group commit on PostgreSQL: runs of one statement that arrive together share one
transaction, one round trip and one commit.

A create is one statement (a debit, a ledger row, a task), and what bounds many of them
is not the statement but what surrounds it: a round trip each, a commit each, and the
WAL flush each commit waits for while it holds the account's row lock, so that creates
on one account queue behind each other's flushes. Here a run that arrives while
`IN_FLIGHT` batches are already on the wire waits for the next batch, and a batch is
sent as asyncpg's pipelined `fetchmany`: every run's Bind and Execute, then one Sync,
which PostgreSQL runs as one implicit transaction. Nothing waits on a timer: a lone run
goes at once, as a batch of one.

The reads every call makes (the key check, the status poll) are batched the same way:
there the gain is one pool checkout and one round trip for the whole batch, which is
most of what a one-row read costs the API process.

Every caller is answered only after the batch committed. One run that fails (a value
PostgreSQL refuses, a constraint) must not fail the others, so a batch that fails is
run again one statement at a time, and only the run at fault gets the error. A lost
connection fails the whole batch (none of it committed) and every caller gets the
error, as each would have alone.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

IN_FLIGHT = 2
"""Batches of one statement on the wire at once, per process: while they run, the
next one fills."""

MAX_BATCH = 128
"""Runs in one batch at most: bounds how long one batch holds its row locks."""


@dataclass(slots=True)
class _Run:
    args: Sequence[Any]
    key: tuple[Any, ...]
    order: Any
    answer: asyncio.Future[asyncpg.Record | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Queue:
    waiting: list[_Run] = field(default_factory=list)
    in_flight: int = 0


Connect = Callable[[], Awaitable[asyncpg.Pool]]


class Batches:
    def __init__(self, pool: Connect) -> None:
        self._pool = pool
        self._queues: defaultdict[str, _Queue] = defaultdict(_Queue)
        self._running: set[asyncio.Task[None]] = set()

    async def one(
        self,
        sql: str,
        args: Sequence[Any],
        *,
        key: tuple[Any, ...],
        order: Any,
        key_columns: tuple[int, ...],
    ) -> asyncpg.Record | None:
        """The row of this run of `sql` (None when it answers none), once its batch has
        committed. `key` is the run's own values of the statement's key columns (numbers
        `key_columns` of its row); `order` sorts the runs of a batch."""
        run = _Run(args, key, order)
        queue = self._queues[sql]
        queue.waiting.append(run)
        self._start(sql, queue, key_columns)
        return await run.answer

    def _start(self, sql: str, queue: _Queue, key_columns: tuple[int, ...]) -> None:
        while queue.waiting and queue.in_flight < IN_FLIGHT:
            batch = queue.waiting[:MAX_BATCH]
            del queue.waiting[:MAX_BATCH]
            queue.in_flight += 1
            task = asyncio.create_task(self._send(sql, queue, batch, key_columns))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _send(
        self, sql: str, queue: _Queue, batch: list[_Run], key_columns: tuple[int, ...]
    ) -> None:
        try:
            # A caller that gave up before its batch was sent is left out: it was never
            # told anything, so nothing of it may be stored.
            runs = sorted((run for run in batch if not run.answer.done()), key=_order)
            if runs:
                await self._commit(sql, runs, key_columns)
        finally:
            queue.in_flight -= 1
            self._start(sql, queue, key_columns)

    async def _commit(self, sql: str, runs: list[_Run], key_columns: tuple[int, ...]) -> None:
        try:
            pool = await self._pool()
            async with pool.acquire() as conn:
                if len(runs) == 1:
                    _answer(runs[0], await conn.fetchrow(sql, *runs[0].args))
                    return
                rows = await conn.fetchmany(sql, [run.args for run in runs])
        except asyncpg.PostgresError as exc:
            if len(runs) == 1 or isinstance(exc, asyncpg.PostgresConnectionError):
                _fail(runs, exc)
                return
            # Nothing of the batch committed: find the run at fault by running each alone.
            for run in runs:
                await self._commit(sql, [run], key_columns)
            return
        except asyncio.CancelledError:
            for run in runs:
                run.answer.cancel()
            raise
        except Exception as exc:
            _fail(runs, exc)
            return
        by_key = {tuple(row[i] for i in key_columns): row for row in rows}
        for run in runs:
            _answer(run, by_key.get(run.key))

    async def close(self) -> None:
        """Wait for the batches on the wire (their callers are owed an answer)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _order(run: _Run) -> tuple[bool, Any]:
    return (run.order is None, run.order)


def _answer(run: _Run, row: asyncpg.Record | None) -> None:
    if not run.answer.done():
        run.answer.set_result(row)


def _fail(runs: list[_Run], exc: Exception) -> None:
    for run in runs:
        if not run.answer.done():
            run.answer.set_exception(exc)

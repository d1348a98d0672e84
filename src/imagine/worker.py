"""The worker: claims due tasks with a lease and advances them through their provider.

One step of a task is: submit it (storing the upstream id at once), or poll it, then
either schedule the next look, store its results and finish it, or fail and refund it.
A task past its deadline fails and is refunded. Leases make any number of workers, in
any number of processes, safe: a task is advanced by whoever holds it, and a crashed
worker's lease simply expires. Every write is a transition of services/tasks/lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from imagine import catalog
from imagine.clock import utc_now
from imagine.fetch import Fetcher
from imagine.logs import task_id_var
from imagine.metrics import FAILOVERS, OPERATOR_ERRORS, TASK_DURATION, TASKS_FINISHED
from imagine.providers import media
from imagine.providers.base import (
    Artifact,
    Failed,
    Job,
    Outcome,
    Pending,
    Provider,
    ProviderError,
    Remote,
    Succeeded,
)
from imagine.providers.registry import ProviderRouter, UnknownProvider
from imagine.services.tasks import lifecycle
from imagine.services.tasks.lifecycle import Lease, Refused, Result
from imagine.services.tasks.sources import source_task
from imagine.states import TaskStatus
from imagine.storage import Storage
from imagine.store import tasks as repo
from imagine.store.db import Database, Tx
from imagine.store.tasks import TaskRow
from imagine.store.wakeups import Due

logger = logging.getLogger("imagine.worker")

STEP_TIMEOUT = 600.0
"""Seconds one provider call or one copy of results may take before it counts as failed."""


def _storable_id(upstream_id: str) -> bool:
    return 0 < len(upstream_id) <= 200 and upstream_id.isprintable()


def retry_delay(attempt: int, retry_after: float | None = None, *, cap: float = 60.0) -> float:
    """Capped exponential backoff with jitter; an upstream's Retry-After wins when longer."""
    backoff = min(cap, 2.0 ** max(0, attempt))
    delay = backoff / 2 + random.uniform(0, backoff / 2)
    return max(delay, retry_after or 0.0)


class Worker:
    def __init__(
        self,
        db: Database,
        router: ProviderRouter,
        storage: Storage,
        fetcher: Fetcher,
        *,
        concurrency: int,
        failover_after: int,
        poll_interval: float,
        lease_seconds: float,
        refresh_timeout: float,
        refresh_interval: float,
        inline_only: bool = False,
    ) -> None:
        """`inline_only`: this process runs no worker loop (`serve --no-worker`); its
        refresh is at most one upstream status query (see `refresh`)."""
        self.id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._db = db
        self._router = router
        self._storage = storage
        self._fetcher = fetcher
        self._failover_after = failover_after
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._lease = timedelta(seconds=lease_seconds)
        # Steps renew their lease while they run (a synchronous xAI image or a large copy
        # may take minutes); this only bounds a step whose provider never answers.
        self._call_timeout = STEP_TIMEOUT
        self._refresh_timeout = refresh_timeout
        self._refresh_interval = timedelta(seconds=refresh_interval)
        self._wake = db.wakeups.subscribe(Due.WORK)
        self._stopping = False
        self._running: set[asyncio.Task[None]] = set()
        self._refreshing: dict[str, asyncio.Task[TaskRow | None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._inline_only = inline_only

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name="imagine-worker")

    async def run(self) -> None:
        logger.info("worker %s started (concurrency %d)", self.id, self._concurrency)
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._running)
            claimed: list[TaskRow] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    logger.exception("claiming due tasks failed; trying again")
            for task in claimed:
                self._spawn(task)
            if claimed and len(claimed) == free:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let running steps finish for `grace` seconds, then cancel them
        (a cancelled step hands its lease back so another worker takes over at once)."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        pending = set(self._running) | set(self._refreshing.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)

    def _spawn(self, task: TaskRow) -> None:
        step = asyncio.create_task(self._advance(task), name=f"advance-{task.id}")
        self._running.add(step)
        step.add_done_callback(self._on_step_done)

    def _on_step_done(self, step: asyncio.Task[None]) -> None:
        self._running.discard(step)
        self._wake.set()

    async def _claim(self, limit: int) -> list[TaskRow]:
        now = utc_now()
        return await self._db.write(
            lambda tx: lifecycle.claim_due(
                tx, worker_id=self.id, now=now, lease_until=now + self._lease, limit=limit
            )
        )

    # -- inline refresh from the status call -------------------------------------------

    async def refresh(self, task_id: str) -> TaskRow | None:
        """Ask the provider about one task now, at most once per refresh interval and at
        most one call at a time per task; wait for it no longer than the refresh timeout.

        Returns the task as it stands afterwards, or None when nothing was refreshed in time
        (the refresh goes on in the background and its result is kept).

        In a process that runs this worker, the refresh is a whole step (submit, poll,
        copy the results). In one that doesn't (`serve --no-worker`), it is at most one
        upstream status query of a task already sent, to a provider whose poll is one
        (`polls_remotely`); anything heavier, rendering or copying results, is handed to a
        worker at once (`lifecycle.hand_over`, which wakes one).
        """
        if self._refresh_timeout <= 0 or self._stopping:
            return None
        if self._inline_only and not self._remote_polling:
            return None  # nothing here can be settled by a status query
        running = self._refreshing.get(task_id)
        if running is None:
            running = asyncio.create_task(self._refresh_once(task_id))
            self._refreshing[task_id] = running
            running.add_done_callback(lambda _: self._refreshing.pop(task_id, None))
        try:
            return await asyncio.wait_for(asyncio.shield(running), self._refresh_timeout)
        except TimeoutError:
            return None

    @property
    def _remote_polling(self) -> bool:
        return any(provider.polls_remotely for provider in self._router.providers())

    async def _refresh_once(self, task_id: str) -> TaskRow | None:
        now = utc_now()
        light = self._inline_only
        claimed = await self._db.write(
            lambda tx: lifecycle.claim_for_refresh(
                tx,
                task_id,
                worker_id=self.id,
                now=now,
                lease_until=now + self._lease,
                checked_before=now - self._refresh_interval,
                sent_only=light,
            )
        )
        if isinstance(claimed, Refused):
            return None
        if light:
            await self._query_once(claimed)
        else:
            await self._advance(claimed)
        return await self._db.read(lambda tx: repo.get_task(tx, task_id))

    async def _query_once(self, task: TaskRow) -> None:
        """The refresh of a process that runs no worker: one status query, its answer
        kept; a success is handed to a worker to copy the results."""
        try:
            provider = self._router.get(task.provider)
        except UnknownProvider:
            provider = None
        if provider is None or not provider.polls_remotely:
            await self._write(
                lambda tx: lifecycle.hand_over(
                    tx, self._hold(task), results_to_copy=None, now=utc_now()
                )
            )
            return
        try:
            job = await self._job(task)
            outcome = await self._poll(task, provider, job)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(task))
            raise
        except TimeoutError:
            await self._release(task)  # the worker's next look decides; no error counted
            return
        except ProviderError as exc:
            await self._on_error(task, provider, job, exc)
            return
        except Exception:
            await self._unexpected(task)
            return
        if isinstance(outcome, Succeeded):
            remote = [result.url for result in outcome.results if isinstance(result, Remote)]
            urls = remote if remote and len(remote) == len(outcome.results) else None
            # Results given inline (not as URLs) are asked for again by the worker.
            await self._write(
                lambda tx: lifecycle.hand_over(
                    tx, self._hold(task), results_to_copy=urls, now=utc_now()
                )
            )
            return
        await self._settle(task, provider, job, outcome)

    # -- one step of one task ---------------------------------------------------------

    async def _advance(self, task: TaskRow) -> None:
        # Every line logged during the step (ours, the provider's) names its task. Each
        # step runs in an asyncio task of its own, so the value ends with it.
        task_id_var.set(task.id)
        heartbeat = asyncio.create_task(self._keep_lease(task))
        try:
            await self._step(task)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(task))
            raise
        except Exception:
            logger.exception("task %s: step failed; it will be retried", task.id)
            await self._retry_later(task, None)
        finally:
            heartbeat.cancel()

    async def _keep_lease(self, task: TaskRow) -> None:
        """Renew the lease of a step that runs long, so no other worker takes the task."""
        period = self._lease.total_seconds() / 3
        lease = self._hold(task)

        async def renew(tx: Tx) -> Result:
            return await lifecycle.renew_lease(tx, lease, until=utc_now() + self._lease)

        while True:
            await asyncio.sleep(period)
            # Shielded: the step ends by cancelling this, and a write cancelled halfway
            # leaves its connection mid-transaction for the pool to roll back.
            await asyncio.shield(self._db.write(renew))

    async def _step(self, task: TaskRow) -> None:
        if utc_now() >= task.deadline_at:
            await self._expire(task)
            return
        try:
            provider = self._router.get(task.provider)
        except UnknownProvider:
            logger.error(
                "task %s: provider %s is not configured here; the task waits for a worker "
                "that has it, or for its deadline",
                task.id,
                task.provider,
            )
            await self._retry_later(task, None)
            return
        job = await self._job(task)
        try:
            outcome: Outcome | None = None
            if task.upstream_id is None and not task.results_to_copy:
                submitted = await self._submit(task, provider, job)
                if submitted is None:
                    return
                # From here on the task is sent: an error is handled as a sent task's.
                task, job, outcome = submitted
            if outcome is None:
                outcome = await self._poll(task, provider, job)
        except TimeoutError:
            if utc_now() >= task.deadline_at:
                await self._expire(task)
                return
            error = ProviderError(f"{provider.name} did not answer in time", retryable=True)
            await self._on_error(task, provider, job, error)
            return
        except ProviderError as exc:
            await self._on_error(task, provider, job, exc)
            return
        except Exception:
            await self._unexpected(task)
            return
        try:
            await self._settle(task, provider, job, outcome)
        except Exception:
            await self._unexpected(task)

    async def _unexpected(self, task: TaskRow) -> None:
        """A failure of ours, not the provider's: retried, counted from the task as this
        step last wrote it (a submit earlier in the step reset its error count)."""
        logger.exception("task %s: step failed; it will be retried", task.id)
        await self._retry_later(task, None)

    def _budget(self, task: TaskRow) -> float:
        """Seconds the next call of this step may take: never past the task's deadline,
        so a task is final moments after it, whatever its provider or a download does."""
        left = (task.deadline_at - utc_now()).total_seconds()
        return max(0.0, min(self._call_timeout, left))

    async def _submit(
        self, task: TaskRow, provider: Provider, job: Job
    ) -> tuple[TaskRow, Job, Outcome | None] | None:
        """Send the task upstream and keep its upstream id at once. None when this step
        has nothing more to do; else the task as sent, and the outcome if the provider
        answered with one already."""
        now = utc_now()
        async with asyncio.timeout(self._budget(task)):
            submitted = await provider.submit(job)
        if not _storable_id(submitted.upstream_id):
            # Storing it would fail, and a retry would submit (and pay) again.
            raise ProviderError(
                f"{provider.name} answered with a task id this server can't keep",
                retryable=False,
            )
        # Nothing more to do in this step: the same write hands the lease back.
        done = submitted.outcome is None and submitted.poll_after > 0
        upstream_id = submitted.upstream_id
        stored = await self._write(
            lambda tx: lifecycle.record_submission(
                tx,
                self._hold(task),
                upstream_id=upstream_id,
                provider_state=submitted.state,
                next_check_at=self._next_check(task, submitted.poll_after),
                keep_lease=not done,
                now=now,
            )
        )
        if not stored or done:
            return None
        sent = replace(task, upstream_id=upstream_id, provider_state=submitted.state, attempts=0)
        job = replace(job, upstream_id=upstream_id, state=submitted.state)
        return sent, job, submitted.outcome

    async def _poll(self, task: TaskRow, provider: Provider, job: Job) -> Outcome:
        if task.results_to_copy:
            # The results are known; only copying them failed last time. Don't ask again.
            return Succeeded([Remote(url) for url in task.results_to_copy])
        async with asyncio.timeout(self._budget(task)):
            return await provider.poll(job)

    async def _settle(self, task: TaskRow, provider: Provider, job: Job, outcome: Outcome) -> None:
        if isinstance(outcome, Pending):
            next_check_at = self._next_check(task, outcome.poll_after)
            await self._write(
                lambda tx: lifecycle.schedule_next_check(
                    tx,
                    self._hold(task),
                    next_check_at=next_check_at,
                    callback_read=task.upstream_callback is not None,
                    now=utc_now(),
                    progress=outcome.progress,
                )
            )
        elif isinstance(outcome, Succeeded):
            try:
                async with asyncio.timeout(self._budget(task)):
                    artifacts = await self._mirror(task, provider, outcome.results)
            except (ProviderError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError) and utc_now() >= task.deadline_at:
                    await self._expire(task)
                    return
                error = (
                    exc
                    if isinstance(exc, ProviderError)
                    else ProviderError("copying the results took too long", retryable=True)
                )
                if not error.retryable:
                    await self._fail(task, error.message)
                    return
                remote = [result.url for result in outcome.results if isinstance(result, Remote)]
                known = remote if len(remote) == len(outcome.results) else task.results_to_copy
                await self._retry_later(task, error, results_to_copy=known)
                return
            urls = await self._storage.save(task.id, artifacts)
            sizes = [_size_of(artifact) for artifact in artifacts]
            now = utc_now()
            if await self._write(
                lambda tx: lifecycle.succeed(
                    tx, self._hold(task), task, result_urls=urls, result_sizes=sizes, now=now
                )
            ):
                TASKS_FINISHED.labels(task.provider, TaskStatus.SUCCESS).inc()
                _observe_duration(task, now)
                logger.info("task %s: SUCCESS", task.id)
        elif isinstance(outcome, Failed):
            await self._fail(task, outcome.message)

    async def _mirror(
        self, task: TaskRow, provider: Provider, results: list[Artifact | Remote]
    ) -> list[Artifact]:
        """The results as our own files: upstream URLs expire, ours don't."""
        if not results:
            raise ProviderError("the provider reported success without any result", retryable=True)
        spec = catalog.get_model(task.model)
        wanted = f"{spec.output.value}/" if spec is not None else ""

        async def copy(result: Artifact | Remote) -> Artifact:
            if isinstance(result, Remote):
                result = await self._fetcher.result(result.url)
            if not result.content_type.startswith(wanted):
                raise ProviderError(
                    f"the provider returned {result.content_type} for a task that makes "
                    f"{spec.output.value if spec else 'media'}",
                    retryable=False,
                )
            return result

        copies = [asyncio.ensure_future(copy(result)) for result in results]
        try:
            return list(await asyncio.gather(*copies))
        finally:
            # One failed copy ends the step: the others must not go on holding result
            # slots (and the network) past it.
            for pending in copies:
                pending.cancel()
            await asyncio.gather(*copies, return_exceptions=True)

    async def _on_error(
        self, task: TaskRow, provider: Provider, job: Job, error: ProviderError
    ) -> None:
        """The error policy (docs/providers.md): fail now, retry here, or move on."""
        if error.operator:
            OPERATOR_ERRORS.labels(provider.name).inc()
            logger.error("provider %s needs the operator: %s", provider.name, error.message)
        if not error.retryable:
            await self._fail(task, error.message)
            return
        if error.deferred:
            next_check_at = self._next_check(task, error.retry_after or 1.0)
            await self._write(
                lambda tx: lifecycle.defer(
                    tx,
                    self._hold(task),
                    next_check_at=next_check_at,
                    callback_read=task.upstream_callback is not None,
                    now=utc_now(),
                )
            )
            return
        attempts = task.attempts + 1
        if error.max_attempts is not None and attempts >= error.max_attempts:
            await self._fail(task, f"{error.message} ({attempts} tries)")
            return
        # Only a task the upstream doesn't have yet can move; a submitted one is polled
        # where it runs (moving it would pay for it twice).
        if task.upstream_id is None:
            tried = dict(task.routes_tried or {})
            on_this_route = attempts - int(tried.get(task.provider, 0))
            if error.failover or on_this_route >= self._failover_after:
                successor = self._router.failover(task.model, task.provider, job.input, job.source)
                if successor is not None:
                    await self._move(task, provider, successor, error, attempts, tried)
                    return
        await self._retry_later(task, error)

    async def _move(
        self,
        task: TaskRow,
        provider: Provider,
        successor: Provider,
        error: ProviderError,
        attempts: int,
        tried: dict[str, int],
    ) -> None:
        """Fail over to the next route: at once the first time round the routes; after
        that with the backoff (and Retry-After) that staying would have had, so that routes
        which all fail are not hammered in turn."""
        first_visit = successor.name not in tried
        tried[task.provider] = tried.get(task.provider, 0)
        tried[successor.name] = attempts
        delay = 0.0 if first_visit else retry_delay(attempts, error.retry_after)
        FAILOVERS.labels(provider.name, successor.name).inc()
        logger.warning(
            "task %s: %s (%s); moving to %s in %.1fs",
            task.id,
            provider.name,
            error.message,
            successor.name,
            delay,
        )
        next_check_at = self._next_check(task, delay)
        await self._write(
            lambda tx: lifecycle.fail_over(
                tx,
                self._hold(task),
                provider=successor.name,
                attempts=attempts,
                routes_tried=tried,
                next_check_at=next_check_at,
                callback_read=task.upstream_callback is not None,
                now=utc_now(),
            )
        )

    async def _job(self, task: TaskRow) -> Job:
        source = None
        if task.source_task_id is not None:
            source_id = task.source_task_id
            found = await self._db.read(lambda tx: repo.get_task(tx, source_id))
            if found is not None:
                source = source_task(found)
        return Job(
            task_id=task.id,
            model=task.model,
            account_id=task.account_id,
            input=task.request.get("input", {}),
            upstream_id=task.upstream_id,
            state=task.provider_state or {},
            source=source,
            callback=task.upstream_callback,
            callback_token=task.callback_token or "",
        )

    def _hold(self, task: TaskRow) -> Lease:
        return Lease(task.id, self.id)

    def _next_check(self, task: TaskRow, after: float) -> datetime:
        # Never sleep past the deadline: the task must be looked at when it expires.
        return min(utc_now() + timedelta(seconds=max(0.0, after)), task.deadline_at)

    async def _write(self, transition: Callable[[Tx], Coroutine[Any, Any, Result]]) -> bool:
        """Run one lifecycle transition; False (logged) when the task was not this
        worker's to move any more: its lease was taken over, or it ended meanwhile."""
        result = await self._db.write(transition)
        if isinstance(result, Refused):
            logger.warning(
                "task %s: %s refused (it needs %s); step dropped",
                result.task_id,
                result.transition,
                result.needs,
            )
            return False
        return True

    async def _release(self, task: TaskRow) -> None:
        await self._db.write(lambda tx: lifecycle.release(tx, self._hold(task)))

    async def _retry_later(
        self,
        task: TaskRow,
        error: ProviderError | None,
        *,
        results_to_copy: list[str] | None = None,
    ) -> None:
        attempts = task.attempts + 1
        delay = retry_delay(attempts, error.retry_after if error else None)
        if error is not None:
            logger.warning("task %s: %s; retrying in %.1fs", task.id, error.message, delay)
        next_check_at = self._next_check(task, delay)
        await self._write(
            lambda tx: lifecycle.retry_later(
                tx,
                self._hold(task),
                attempts=attempts,
                next_check_at=next_check_at,
                results_to_copy=results_to_copy or task.results_to_copy,
                callback_read=task.upstream_callback is not None,
                now=utc_now(),
            )
        )

    async def _fail(self, task: TaskRow, message: str) -> None:
        now = utc_now()
        if await self._write(
            lambda tx: lifecycle.fail(tx, self._hold(task), task, message=message, now=now)
        ):
            TASKS_FINISHED.labels(task.provider, TaskStatus.FAILED).inc()
            _observe_duration(task, now)
            logger.info("task %s: FAILED and refunded: %s", task.id, message)

    async def _expire(self, task: TaskRow) -> None:
        now = utc_now()
        if await self._write(lambda tx: lifecycle.expire(tx, self._hold(task), task, now=now)):
            TASKS_FINISHED.labels(task.provider, TaskStatus.FAILED).inc()
            _observe_duration(task, now)
            logger.info("task %s: FAILED and refunded: past its deadline", task.id)


def _observe_duration(task: TaskRow, ended_at: datetime) -> None:
    seconds = (ended_at - task.created_at).total_seconds()
    TASK_DURATION.labels(task.model, task.provider).observe(max(0.0, seconds))


def _size_of(artifact: Artifact) -> list[int] | None:
    """[width, height] of an image result, read from its header; None for anything else."""
    if not artifact.content_type.startswith("image/"):
        return None
    size = media.image_size(artifact.data)
    return None if size is None else list(size)

"""The money rules as stateful properties, on the real services and a real database.

A Hypothesis state machine drives accounts, grants, task creation (alone, in bursts,
with idempotency keys), workers that claim, submit, renew, release, back off, succeed
and fail tasks (each also while another worker holds the task, after losing its lease,
and on tasks that already ended), owners' cancels, deadline expiry through the real
worker, and races between them. After every step the database must agree with the
model the machine keeps:

- every balance equals the sum of its ledger, each ledger row's `balance_after` is the
  running sum, and no balance is ever below zero;
- every task is debited exactly once, at its price, and refunded at most once;
- a refund exists exactly for a task that failed, except a task cancelled after a paid
  provider started it, which keeps its credits (services/tasks/lifecycle.py `cancel`);
- a task that reached SUCCESS or FAILED never changes again (status, results, error,
  refund, finish time), and its webhook, queued once, reports the same outcome.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from imagine import catalog
from imagine.clock import utc_now
from imagine.config import Settings
from imagine.errors import Conflict, ImagineError, InsufficientCredits, InvalidInput, NotFound
from imagine.fetch import Fetcher
from imagine.providers.registry import ProviderRouter
from imagine.runtime import USER_AGENT, providers_for
from imagine.schemas import GenerateInput, GenerateRequest
from imagine.services import billing, keys
from imagine.services.keys import Caller
from imagine.services.tasks import lifecycle
from imagine.services.tasks.idempotency import Created
from imagine.services.tasks.lifecycle import Applied, Lease, Result
from imagine.services.tasks.service import TaskService
from imagine.states import TaskStatus
from imagine.storage import LocalStorage
from imagine.store import tasks as task_repo
from imagine.store.db import ConstraintViolation, Database, Tx
from imagine.store.migrate import upgrade
from imagine.store.tasks import TaskRow
from imagine.worker import Worker
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    ledger_problems_in,
    sqlalchemy_url,
)

T = TypeVar("T")
IN_PROGRESS, SUCCESS, FAILED = TaskStatus

PUBLIC_URL = "http://imagine.test"
HOOK = "https://hooks.example.com/imagine"
LEASE = timedelta(seconds=60)
SHORT_DEADLINE = 1e-6
"""Seconds: tasks made through the short-deadline service are past it at once."""
MODELS = (catalog.TEXT_TO_IMAGE, catalog.TEXT_TO_VIDEO)
# text-to-video goes to kie (an AI provider, engine "ai"), the rest to the preview engine.
ROUTES = {catalog.TEXT_TO_VIDEO: ("kie",)}
KEPT = "its credits are kept"
WHEN = ("now", "later", "stale")
"""When a claim happens: now; after every current lease ran out (another worker takes
over); or long ago, by a worker that has stalled past its lease since."""
RACERS = ("succeed:0", "succeed:1", "fail:0", "fail:1", "cancel:a", "cancel:b")
MESSAGES = {"refused": "the provider refused the prompt", "too long": "x" * 2500}
"""Failure messages, drawn by name (an upstream's may be longer than the 2,000 kept)."""
WORKER = st.integers(0, 1)
CREDITS = st.integers(0, 200)
PICK = st.integers(0, 1000)
"""A task, as an index into the tasks made so far. Not a Bundle: on PostgreSQL which of
two racing writes wins is up to the server, and what Hypothesis draws next must not
depend on that (a Bundle's size, or a precondition, would)."""
FOCUS = st.booleans()
"""Whether a pick is among the tasks the rule can act on (held by the worker, still
unfinished...) rather than among all: acting on the wrong ones is tested too."""


@dataclass(eq=False)
class Account:
    id: str
    caller: Caller = field(repr=False)
    balance: int = field(repr=False)

    def __repr__(self) -> str:
        return f"Account({self.id})"


@dataclass(eq=False)
class Task:
    """What the machine knows a task's row must hold."""

    id: str
    account: Account
    model: str
    provider: str
    credits: int
    deadline_at: datetime
    next_check_at: datetime
    callback: bool
    request: GenerateRequest
    idempotency_key: str | None
    status: TaskStatus = IN_PROGRESS
    refunded: bool = False
    kept: bool = False
    """Cancelled after a paid provider started it: FAILED, credits kept."""
    upstream_id: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    checked_at: datetime | None = None
    attempts: int = 0
    final: tuple[Any, ...] | None = None
    """The row's outcome columns as first seen final; they must never change."""

    def __repr__(self) -> str:
        return f"Task({self.id}, {self.model}, {self.status})"

    def unleased(self, now: datetime) -> bool:
        return self.lease_expires_at is None or self.lease_expires_at < now

    def end(self, status: TaskStatus, *, refunded: bool) -> None:
        self.status = status
        self.refunded = refunded
        self.kept = status == FAILED and not refunded
        self.lease_owner = None
        self.lease_expires_at = None
        if refunded:
            self.account.balance += self.credits


class LedgerMachine(RuleBasedStateMachine):
    accounts = Bundle("accounts")

    def __init__(self, template: Path | str, workdir: Path) -> None:
        """`template`: a migrated database (an SQLite file or a PostgreSQL URL) that this
        example starts from a copy of."""
        super().__init__()
        self.folder = workdir / secrets.token_hex(4)
        self.folder.mkdir(parents=True)
        self.model_tasks: dict[str, Task] = {}
        """Every task made, in the order it was made."""
        self.model_accounts: list[Account] = []
        self.counter = 0
        self.postgres: str | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        if isinstance(template, str):
            self.postgres = create_postgres_database(template=template)
            url = sqlalchemy_url(self.postgres)
        else:
            path = self.folder / "imagine.db"
            with (
                closing(sqlite3.connect(template)) as source,
                closing(sqlite3.connect(path)) as copy,
            ):
                source.backup(copy)
            url = f"sqlite+aiosqlite:///{path}"
        self._runner = asyncio.Runner()
        try:
            self.run(self._open(url))
        except BaseException:
            self._close_everything()
            raise

    async def _open(self, url: str) -> None:
        self.settings = Settings(
            data_dir=self.folder, database_url=url, preview_delay=0, routes=ROUTES
        )
        self.db = Database(url)
        self.storage = LocalStorage(self.settings.files_dir, PUBLIC_URL)
        self.fetcher = Fetcher(
            self.storage,
            user_agent=USER_AGENT,
            allow_private=False,
            max_source_bytes=self.settings.max_download_bytes,
            max_result_bytes=self.settings.max_result_bytes,
        )
        self.router: ProviderRouter = providers_for(self.settings, PUBLIC_URL, self.fetcher)
        self.service = TaskService(
            self.db, self.router, deadline_seconds=1800, allow_private_urls=False
        )
        self.short_service = TaskService(
            self.db, self.router, deadline_seconds=SHORT_DEADLINE, allow_private_urls=False
        )
        self.workers = [
            Worker(
                self.db,
                self.router,
                self.storage,
                self.fetcher,
                concurrency=4,
                failover_after=3,
                poll_interval=0.5,
                lease_seconds=LEASE.total_seconds(),
                refresh_timeout=60,
                refresh_interval=0,
            )
            for _ in range(2)
        ]
        if self.postgres is not None:
            self._pg = await asyncpg.connect(self.postgres)
        else:
            self._sqlite = sqlite3.connect(self.folder / "imagine.db", isolation_level=None)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(work)

    def teardown(self) -> None:
        self._close_everything()

    def _close_everything(self) -> None:
        async def close() -> None:
            if self._pg is not None:
                await self._pg.close()
            for name in ("router", "fetcher"):
                if hasattr(self, name):
                    await getattr(self, name).aclose()
            if hasattr(self, "db"):
                await self.db.dispose()

        try:
            self.run(close())
        finally:
            self._runner.close()
            if self._sqlite is not None:
                self._sqlite.close()
            if self.postgres is not None:
                drop_postgres_database(self.postgres)

    # -- reading the database directly ---------------------------------------------------

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            return list(self._sqlite.execute(sql))
        return [tuple(row) for row in self.run(self._pg.fetch(sql))]

    def row(self, task_id: str) -> TaskRow:
        found = self.run(self.db.read(lambda tx: task_repo.get_task(tx, task_id)))
        assert found is not None
        return found

    def write(self, job: Callable[[Tx], Awaitable[T]]) -> T:
        async def run(tx: Tx) -> T:
            return await job(tx)

        return self.run(self.db.write(run))

    def worker_id(self, worker: int) -> str:
        return self.workers[worker].id

    def pick(
        self, pick: int, where: Callable[[Task], bool] | None = None, *, strict: bool = False
    ) -> Task | None:
        """The `pick`th task of those `where` selects; of all tasks when none is (unless
        `strict`); None when there is none."""
        everything = list(self.model_tasks.values())
        candidates = [task for task in everything if where is None or where(task)]
        if not candidates and not strict:
            candidates = everything
        return candidates[pick % len(candidates)] if candidates else None

    def unfinished(self, focus: bool) -> Callable[[Task], bool] | None:
        return (lambda task: task.status == IN_PROGRESS) if focus else None

    def leased(self, focus: bool) -> Callable[[Task], bool] | None:
        return (
            (lambda task: task.status == IN_PROGRESS and task.lease_owner is not None)
            if focus
            else None
        )

    def held_by(self, worker: int, focus: bool) -> Callable[[Task], bool] | None:
        worker_id = self.worker_id(worker)
        return (lambda task: self._holds(task, worker_id)) if focus else None

    def new_name(self, what: str) -> str:
        self.counter += 1
        return f"{what} {self.counter}"

    # -- accounts and credits ------------------------------------------------------------

    @initialize(
        target=accounts,
        credits=st.integers(24, 200),
        tasks=st.lists(st.tuples(st.sampled_from(MODELS), st.booleans()), min_size=1, max_size=4),
    )
    def first_account(self, credits: int, tasks: list[tuple[str, bool]]) -> Account:
        """An account, and the tasks it starts with (as many as its credits pay for)."""
        account = self._open_account(credits)
        for model, short in tasks:
            request = GenerateRequest(model=model, input=GenerateInput(prompt="first"))
            self._create(account, request, short=short, idempotency_key=None)
        return account

    @precondition(lambda self: len(self.model_accounts) < 4)
    @rule(target=accounts, credits=CREDITS)
    def open_account(self, credits: int) -> Account:
        return self._open_account(credits)

    def _open_account(self, credits: int) -> Account:
        created = self.run(keys.create_key(self.db, name=self.new_name("account"), credits=credits))
        assert created.balance == credits
        account = Account(created.account_id, Caller(created.key_id, created.account_id), credits)
        self.model_accounts.append(account)
        return account

    @rule(account=accounts, credits=st.integers(0, 30))
    def add_key(self, account: Account, credits: int) -> None:
        created = self.run(
            keys.create_key(
                self.db, name=self.new_name("key"), credits=credits, account_id=account.id
            )
        )
        account.balance += credits
        assert created.balance == account.balance

    @rule(account=accounts, amount=st.integers(-60, 100))
    def grant(self, account: Account, amount: int) -> None:
        granting = keys.grant_credits(self.db, account.id, amount, "by the operator")
        if amount == 0 or account.balance + amount < 0:
            with pytest.raises(InvalidInput):
                self.run(granting)
            return
        _, balance = self.run(granting)
        account.balance += amount
        assert balance == account.balance

    # -- creating tasks ------------------------------------------------------------------

    @rule(
        account=accounts,
        model=st.sampled_from(MODELS),
        short=st.booleans(),
        callback=st.booleans(),
        idempotent=st.booleans(),
    )
    def create(
        self, account: Account, model: str, short: bool, callback: bool, idempotent: bool
    ) -> None:
        request = GenerateRequest(
            model=model,
            input=GenerateInput(prompt=self.new_name("prompt")),
            callback_url=HOOK if callback else None,
        )
        key = self.new_name("idempotency").replace(" ", "-") if idempotent else None
        self._create(account, request, short=short, idempotency_key=key)

    @rule(source=PICK, focus=FOCUS, by=st.one_of(st.none(), accounts))
    def upscale(self, source: int, focus: bool, by: Account | None) -> None:
        """Chains on an earlier task: only a finished image task of the same account."""
        picked = self.pick(
            source,
            (lambda t: t.model == catalog.TEXT_TO_IMAGE and t.status == SUCCESS) if focus else None,
        )
        if picked is None:
            return
        account = by or picked.account
        self._upscale(picked, account)

    def _upscale(self, source: Task, account: Account) -> None:
        request = GenerateRequest(model=catalog.UPSCALE, input=GenerateInput(task_id=source.id))
        usable = (
            account is source.account
            and source.model == catalog.TEXT_TO_IMAGE
            and source.status == SUCCESS
        )
        if not usable:
            # Refused before anything is charged.
            with pytest.raises(ImagineError):
                self.run(self.service.create(account.caller, request))
            return
        self._create(account, request, short=False, idempotency_key=None)

    def _create(
        self,
        account: Account,
        request: GenerateRequest,
        *,
        short: bool,
        idempotency_key: str | None,
    ) -> Task | None:
        service = self.short_service if short else self.service
        price = catalog.MODELS[request.model].credits
        if account.balance < price:
            with pytest.raises(InsufficientCredits):
                self.run(service.create(account.caller, request, idempotency_key))
            return None
        created = self.run(service.create(account.caller, request, idempotency_key))
        assert (created.status, created.replayed) == (IN_PROGRESS, False)
        account.balance -= price
        return self._track(created.task_id, account, request, idempotency_key)

    def _track(
        self,
        task_id: str,
        account: Account,
        request: GenerateRequest,
        idempotency_key: str | None,
    ) -> Task:
        row = self.row(task_id)
        assert row.provider == ROUTES.get(request.model, ("preview",))[0]
        assert (row.account_id, row.status, row.credits) == (
            account.id,
            IN_PROGRESS,
            catalog.MODELS[request.model].credits,
        )
        task = Task(
            id=task_id,
            account=account,
            model=request.model,
            provider=row.provider,
            credits=row.credits,
            deadline_at=row.deadline_at,
            next_check_at=row.next_check_at,
            callback=request.callback_url is not None,
            request=request,
            idempotency_key=idempotency_key,
        )
        self.model_tasks[task_id] = task
        return task

    @rule(account=accounts, count=st.integers(2, 5))
    def burst(self, account: Account, count: int) -> None:
        """Concurrent creates from one account: exactly as many as the balance covers."""
        requests = [
            GenerateRequest(input=GenerateInput(prompt=self.new_name("burst")))
            for _ in range(count)
        ]

        async def together() -> list[Created | BaseException]:
            return await asyncio.gather(
                *(self.service.create(account.caller, request) for request in requests),
                return_exceptions=True,
            )

        price = catalog.MODELS[catalog.TEXT_TO_IMAGE].credits
        affordable = min(count, account.balance // price)
        outcomes = self.run(together())
        made = 0
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, Created):
                account.balance -= price
                self._track(outcome.task_id, account, request, None)
                made += 1
            elif not isinstance(outcome, InsufficientCredits):
                raise outcome
        assert made == affordable
        event("burst: " + ("all made" if affordable == count else "some refused (402)"))

    @rule(task=PICK, same_body=st.booleans())
    def retry_with_the_same_key(self, task: int, same_body: bool) -> None:
        """A repeated request with its idempotency key gets its task back, uncharged."""
        picked = self.pick(task, lambda t: t.idempotency_key is not None, strict=True)
        if picked is None or picked.idempotency_key is None:
            return
        self._retry(picked, picked.idempotency_key, same_body)

    def _retry(self, task: Task, key: str, same_body: bool) -> None:
        request = task.request
        if not same_body:
            request = request.model_copy(update={"input": GenerateInput(prompt="another one")})
        creating = self.service.create(task.account.caller, request, key)
        if not same_body:
            with pytest.raises(InvalidInput):
                self.run(creating)
            return
        assert self.run(creating) == Created(
            task.id, task.status, replayed=True, owner=task.account.caller
        )

    # -- workers: claims and guarded writes -------------------------------------------

    def _clock(self, when: str) -> tuple[datetime, datetime]:
        now = utc_now()
        if when == "later":
            now += 2 * LEASE
        elif when == "stale":
            now -= 3 * LEASE
        return now, now + LEASE

    @rule(worker=WORKER, when=st.sampled_from(WHEN), limit=st.integers(1, 6))
    def claim_due(self, worker: int, when: str, limit: int) -> None:
        now, until = self._clock(when)
        due = [
            task
            for task in self.model_tasks.values()
            if task.status == IN_PROGRESS and task.unleased(now) and task.next_check_at <= now
        ]
        worker_id = self.worker_id(worker)
        rows = self.write(
            lambda tx: lifecycle.claim_due(
                tx, worker_id=worker_id, now=now, lease_until=until, limit=limit
            )
        )
        claimed = {row.id for row in rows}
        event(f"claim_due {when}: {'none' if not rows else 'some'} claimed")
        assert claimed <= {task.id for task in due}
        assert len(claimed) == len(rows) == min(limit, len(due))
        left = [task.next_check_at for task in due if task.id not in claimed]
        if rows and left:
            # The longest-waiting first.
            assert max(self.model_tasks[row.id].next_check_at for row in rows) <= min(left)
        for row in rows:
            assert (row.status, row.lease_owner) == (IN_PROGRESS, worker_id)
            self._leased(self.model_tasks[row.id], worker_id, until)

    def _leased(self, task: Task, worker_id: str, until: datetime) -> None:
        task.lease_owner = worker_id
        task.lease_expires_at = until

    @rule(worker=WORKER, task=PICK, focus=FOCUS, when=st.sampled_from(WHEN))
    def claim_one(self, worker: int, task: int, focus: bool, when: str) -> None:
        picked = self.pick(task, self.unfinished(focus))
        if picked is not None:
            self._claim_one(worker, picked, when)

    def _claim_one(self, worker: int, task: Task, when: str) -> None:
        now, until = self._clock(when)
        claimable = (
            task.status == IN_PROGRESS
            and task.attempts == 0
            and task.unleased(now)
            and (task.checked_at is None or task.checked_at <= now)
        )
        worker_id = self.worker_id(worker)
        claimed = self.write(
            lambda tx: lifecycle.claim_for_refresh(
                tx, task.id, worker_id=worker_id, now=now, lease_until=until, checked_before=now
            )
        )
        row = claimed if isinstance(claimed, TaskRow) else None
        assert (row is not None) == claimable
        event(f"claim_one {when}: {'claimed' if row else 'refused'}")
        if row is not None:
            assert (row.status, row.lease_owner) == (IN_PROGRESS, worker_id)
            self._leased(task, worker_id, until)

    def _holds(self, task: Task, worker_id: str) -> bool:
        return task.status == IN_PROGRESS and task.lease_owner == worker_id

    @rule(
        worker=WORKER,
        task=PICK,
        focus=FOCUS,
        action=st.sampled_from(("submit", "renew", "release", "back off")),
    )
    def worker_writes(self, worker: int, task: int, focus: bool, action: str) -> None:
        """One of a worker's guarded writes; only the lease holder's lands."""
        picked = self.pick(task, self.held_by(worker, focus))
        if picked is not None:
            self._worker_writes(worker, picked, action)

    def _worker_writes(self, worker: int, task: Task, action: str) -> None:
        now = utc_now()
        values: dict[str, Any] = {}
        lease = Lease(task.id, self.worker_id(worker))
        able = self._holds(task, lease.worker_id)
        transition: Callable[[Tx], Awaitable[Result]]
        if action == "submit":
            # A task is sent upstream once: recording a second submission is refused.
            able = able and task.upstream_id is None
            upstream_id = f"{task.provider}-{task.id}"
            state = {"ready_at": now.isoformat()} if task.provider == "preview" else {}
            values.update(upstream_id=upstream_id, checked_at=now, attempts=0, next_check_at=now)
            transition = lambda tx: lifecycle.record_submission(  # noqa: E731
                tx,
                lease,
                upstream_id=upstream_id,
                provider_state=state,
                next_check_at=now,
                keep_lease=True,
                now=now,
            )
        elif action == "renew":
            values["lease_expires_at"] = now + LEASE
            transition = lambda tx: lifecycle.renew_lease(tx, lease, until=now + LEASE)  # noqa: E731
        elif action == "release":
            values.update(lease_owner=None, lease_expires_at=None)
            transition = lambda tx: lifecycle.release(tx, lease)  # noqa: E731
        else:
            values.update(
                attempts=task.attempts + 1,
                next_check_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
            transition = lambda tx: lifecycle.retry_later(  # noqa: E731
                tx,
                lease,
                attempts=task.attempts + 1,
                next_check_at=now,
                results_to_copy=None,
                callback_read=False,
                now=now,
            )
        stored = isinstance(self.write(transition), Applied)
        assert stored == able
        event(f"worker {action}: {'stored' if stored else 'dropped'}")
        if not stored:
            return
        task.upstream_id = values.get("upstream_id", task.upstream_id)
        task.checked_at = values.get("checked_at", task.checked_at)
        task.attempts = values.get("attempts", task.attempts)
        task.next_check_at = values.get("next_check_at", task.next_check_at)
        task.lease_owner = values.get("lease_owner", task.lease_owner)
        task.lease_expires_at = values.get("lease_expires_at", task.lease_expires_at)

    def succeed_as(
        self, worker_id: str, row: TaskRow, urls: list[str]
    ) -> Coroutine[Any, Any, Result]:
        return self.db.write(
            lambda tx: lifecycle.succeed(
                tx, Lease(row.id, worker_id), row, result_urls=urls, now=utc_now()
            )
        )

    def fail_as(self, worker_id: str, row: TaskRow, message: str) -> Coroutine[Any, Any, Result]:
        return self.db.write(
            lambda tx: lifecycle.fail(
                tx, Lease(row.id, worker_id), row, message=message, now=utc_now()
            )
        )

    # -- ending tasks ----------------------------------------------------------------

    @rule(worker=WORKER, task=PICK, focus=FOCUS)
    def succeed(self, worker: int, task: int, focus: bool) -> None:
        picked = self.pick(task, self.held_by(worker, focus))
        if picked is not None:
            self._succeed(worker, picked)

    def _succeed(self, worker: int, task: Task) -> None:
        worker_id = self.worker_id(worker)
        urls = [f"{PUBLIC_URL}/files/{task.id}/0.png"]
        ended = isinstance(self.run(self.succeed_as(worker_id, self.row(task.id), urls)), Applied)
        assert ended == self._holds(task, worker_id)
        event(f"succeed: {'ended' if ended else 'refused'}")
        if ended:
            task.end(SUCCESS, refunded=False)

    @rule(
        worker=WORKER,
        task=PICK,
        focus=FOCUS,
        message=st.sampled_from(sorted(MESSAGES)),
    )
    def fail(self, worker: int, task: int, focus: bool, message: str) -> None:
        picked = self.pick(task, self.held_by(worker, focus))
        if picked is not None:
            self._fail(worker, picked, message)

    def _fail(self, worker: int, task: Task, message: str) -> None:
        worker_id = self.worker_id(worker)
        failing = self.fail_as(worker_id, self.row(task.id), MESSAGES[message])
        ended = isinstance(self.run(failing), Applied)
        assert ended == self._holds(task, worker_id)
        event(f"fail: {'ended' if ended else 'refused'}")
        if ended:
            task.end(FAILED, refunded=True)

    def _cancel_is_free(self, task: Task) -> bool:
        """The policy: refunded unless a paid provider can have started the task."""
        if self.router.get(task.provider).engine == "preview":
            return True
        return task.upstream_id is None and task.unleased(utc_now())

    @rule(
        task=PICK,
        focus=st.sampled_from(("any", "unfinished", "started")),
        by=st.one_of(st.none(), accounts),
    )
    def cancel(self, task: int, focus: str, by: Account | None) -> None:
        """The owner's cancel (or another account's, which finds nothing); "started"
        picks among tasks a provider may have begun: sent upstream, or held by a worker."""
        started = {
            "any": None,
            "unfinished": self.unfinished(True),
            "started": lambda t: t.status == IN_PROGRESS and bool(t.upstream_id or t.lease_owner),
        }
        picked = self.pick(task, started[focus])
        if picked is not None:
            self._cancel(picked, by)

    def _cancel(self, task: Task, by: Account | None) -> None:
        account = by or task.account
        cancelling = self.service.cancel(account.caller, task.id)
        if account is not task.account:
            with pytest.raises(NotFound):
                self.run(cancelling)
            return
        if task.status != IN_PROGRESS:
            with pytest.raises(Conflict):
                self.run(cancelling)
            return
        free = self._cancel_is_free(task)
        event(f"cancel {task.provider}: {'refunded' if free else 'credits kept'}")
        answer = self.run(cancelling)
        assert answer == {
            "task_id": task.id,
            "status": FAILED,
            "cancelled": True,
            "refunded": free,
            "consumed_credits": 0 if free else task.credits,
        }
        task.end(FAILED, refunded=free)

    @rule(worker=WORKER, task=PICK, focus=FOCUS)
    def worker_refresh(self, worker: int, task: int, focus: bool) -> None:
        """The real worker's inline refresh: claims the task if it may, then runs a step.
        A task past its deadline fails and is refunded; a preview image renders."""
        picked = self.pick(task, self.unfinished(focus))
        if picked is not None:
            self._worker_refresh(worker, picked)

    def _worker_refresh(self, worker: int, task: Task) -> None:
        now = utc_now()
        claimable = (
            task.status == IN_PROGRESS
            and task.attempts == 0
            and task.unleased(now)
            and (task.checked_at is None or task.checked_at <= now)
        )
        expired = now >= task.deadline_at
        renders = task.provider == "preview" and task.model == catalog.TEXT_TO_IMAGE
        if claimable and not expired and not renders:
            return  # its step would call kie, or read a source image that isn't there
        row = self.run(self.workers[worker].refresh(task.id))
        event(
            f"refresh: {'past its deadline' if expired else 'rendered'}"
            if claimable
            else "refresh: not claimable"
        )
        if not claimable:
            assert row is None
            return
        assert row is not None
        if expired:
            assert (row.status, row.refunded) == (FAILED, True)
            assert row.error_message is not None
            assert "did not finish within" in row.error_message
            task.end(FAILED, refunded=True)
        else:
            assert row.status == SUCCESS, row.error_message
            assert row.result_urls is not None
            assert len(row.result_urls) == 1
            task.upstream_id = task.upstream_id or f"preview-{task.id}"
            task.end(SUCCESS, refunded=False)

    @rule(
        task=PICK,
        focus=FOCUS,
        racers=st.lists(st.sampled_from(RACERS), min_size=2, max_size=3, unique=True),
    )
    def race(self, task: int, focus: bool, racers: list[str]) -> None:
        """Two workers finishing one task, and its owner cancelling it, all at once: at
        most one of them ends it, and the others change nothing."""
        picked = self.pick(task, self.leased(focus))
        if picked is not None:
            self._race(picked, racers)

    def _race(self, task: Task, racers: list[str]) -> None:
        row = self.row(task.id)
        free = self._cancel_is_free(task)

        def attempt(racer: str) -> Awaitable[object]:
            kind, _, which = racer.partition(":")
            if kind == "cancel":
                return self.service.cancel(task.account.caller, task.id)
            worker_id = self.worker_id(int(which))
            if kind == "succeed":
                return self.succeed_as(worker_id, row, [f"{PUBLIC_URL}/files/x/0.png"])
            return self.fail_as(worker_id, row, f"failed by {racer}")

        async def together() -> list[object]:
            return await asyncio.gather(
                *(attempt(racer) for racer in racers), return_exceptions=True
            )

        outcomes = self.run(together())
        able = [
            racer
            for racer in racers
            if task.status == IN_PROGRESS
            and (
                racer.startswith("cancel")
                or self._holds(task, self.worker_id(int(racer.partition(":")[2])))
            )
        ]
        winners = []
        for racer, outcome in zip(racers, outcomes, strict=True):
            if racer.startswith("cancel"):
                if isinstance(outcome, Conflict):
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome
                assert isinstance(outcome, dict)
                assert outcome["refunded"] is free
                winners.append(racer)
            elif isinstance(outcome, Applied):
                winners.append(racer)
            elif not isinstance(outcome, lifecycle.Refused):
                raise AssertionError(f"{racer}: {outcome!r}")
        assert len(winners) == (1 if able else 0), (winners, able)
        event(
            f"race won by {winners[0].partition(':')[0]}"
            if winners
            else "race: nobody could end it"
        )
        if not winners:
            return
        assert winners[0] in able
        if winners[0].startswith("cancel"):
            task.end(FAILED, refunded=free)
        elif winners[0].startswith("succeed"):
            task.end(SUCCESS, refunded=False)
        else:
            task.end(FAILED, refunded=True)

    # -- attempts to charge or refund a task twice -------------------------------------

    @rule(task=PICK)
    def debit_again(self, task: int) -> None:
        """A second debit of a task fails its transaction, whatever the balance."""
        picked = self.pick(task)
        if picked is not None:
            self._debit_again(picked)

    def _debit_again(self, task: Task) -> None:
        account = task.account
        expected: tuple[type[BaseException], ...] = (
            (InsufficientCredits,) if account.balance < task.credits else (ConstraintViolation,)
        )
        with pytest.raises(expected):
            self.write(
                lambda tx: billing.debit_task(
                    tx,
                    account_id=account.id,
                    task_id=task.id,
                    amount=task.credits,
                    model=task.model,
                    now=utc_now(),
                )
            )

    @rule(task=PICK)
    def refund_again(self, task: int) -> None:
        """A second refund of a task fails its transaction and gives nothing back."""
        picked = self.pick(task, lambda t: t.refunded, strict=True)
        if picked is not None:
            self._refund_again(picked)

    def _refund_again(self, task: Task) -> None:
        with pytest.raises(ConstraintViolation):
            self.write(
                lambda tx: billing.refund_task(
                    tx,
                    account_id=task.account.id,
                    task_id=task.id,
                    amount=task.credits,
                    now=utc_now(),
                )
            )

    # -- the invariants ----------------------------------------------------------------

    @invariant()
    def balances_are_their_ledgers(self) -> None:
        balances = dict(self.fetch("SELECT id, balance FROM accounts"))
        assert balances == {account.id: account.balance for account in self.model_accounts}
        running: dict[str, int] = dict.fromkeys(balances, 0)
        for account_id, amount, balance_after in self.fetch(
            "SELECT account_id, amount, balance_after FROM ledger ORDER BY id"
        ):
            running[account_id] += amount
            assert balance_after == running[account_id] >= 0
        assert running == balances
        kept = {task.id for task in self.model_tasks.values() if task.kept}
        assert ledger_problems_in(self.fetch, kept=kept) == []

    @invariant()
    def each_task_is_charged_once_and_refunded_only_for_a_failure(self) -> None:
        entries: dict[str, list[tuple[str, int]]] = {}
        for task_id, kind, amount in self.fetch(
            "SELECT task_id, kind, amount FROM ledger WHERE task_id IS NOT NULL ORDER BY id"
        ):
            entries.setdefault(task_id, []).append((kind, amount))
        rows = self.fetch(
            "SELECT id, status, refunded, upstream_id, lease_owner, attempts, error_message, "
            "result_urls, finished_at FROM tasks"
        )
        assert {row[0] for row in rows} == set(self.model_tasks)
        assert set(entries) == set(self.model_tasks)
        for task_id, status, refunded, upstream_id, owner, attempts, error, urls, done in rows:
            task = self.model_tasks[task_id]
            refunds = [("refund", task.credits)] if task.refunded else []
            assert entries[task_id] == [("debit", -task.credits), *refunds], task
            assert (status, bool(refunded), upstream_id, owner, attempts) == (
                task.status,
                task.refunded,
                task.upstream_id,
                task.lease_owner,
                task.attempts,
            ), task
            if status == SUCCESS:
                assert not refunded
            elif status == FAILED:
                # A failure is refunded, unless a paid provider had started the task
                # before its owner cancelled it.
                assert bool(refunded) != task.kept
                if task.kept:
                    assert self.router.get(task.provider).engine == "ai"
                    assert error is not None
                    assert KEPT in error
            else:
                assert not refunded
                assert done is None
            if status != IN_PROGRESS:
                outcome = (status, bool(refunded), error, _json(urls), done)
                assert done is not None
                if task.final is None:
                    task.final = outcome
                assert outcome == task.final, task

    @invariant()
    def each_ended_task_has_one_webhook_that_tells_its_outcome(self) -> None:
        queued: dict[str, list[dict[str, Any]]] = {}
        for task_id, payload in self.fetch("SELECT task_id, payload FROM webhook_deliveries"):
            queued.setdefault(task_id, []).append(json.loads(payload)["data"])
        for task in self.model_tasks.values():
            sent = queued.pop(task.id, [])
            if not task.callback or task.status == IN_PROGRESS:
                assert sent == [], task
                continue
            assert len(sent) == 1, task
            (data,) = sent
            assert data["task_id"] == task.id
            assert data["status"] == task.status
            assert data["consumed_credits"] == (0 if task.refunded else task.credits)
        assert queued == {}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


SQLITE = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
POSTGRES = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


@pytest.fixture
def kie_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    # kie is only routed to, never called: the machine plays its part with guarded writes.
    monkeypatch.setenv("IMAGINE_KIE_API_KEY", "test-key-never-sent")


@pytest.fixture
def sqlite_template(tmp_path: Path) -> Path:
    """A migrated SQLite file: each example runs on a copy of it."""
    path = tmp_path / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database (skips when there is no server): each example runs
    on a fresh database copied from it."""
    url = create_postgres_database()
    try:
        asyncio.run(_migrate(sqlalchemy_url(url)))
        yield url
    finally:
        drop_postgres_database(url)


def machine_on(template: Path | str, workdir: Path) -> type[LedgerMachine]:
    class OnTemplate(LedgerMachine):
        def __init__(self) -> None:
            super().__init__(template, workdir)

    return OnTemplate


@pytest.mark.usefixtures("kie_configured")
def test_money_rules_hold_on_sqlite(sqlite_template: Path, tmp_path: Path) -> None:
    run_state_machine_as_test(machine_on(sqlite_template, tmp_path), settings=SQLITE)


@pytest.mark.usefixtures("kie_configured")
def test_money_rules_hold_on_postgres(postgres_template: str, tmp_path: Path) -> None:
    run_state_machine_as_test(machine_on(postgres_template, tmp_path), settings=POSTGRES)

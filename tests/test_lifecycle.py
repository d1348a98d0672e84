"""The task lifecycle's transitions (services/tasks/lifecycle.py), on SQLite and PostgreSQL.

Every test runs on a fresh database of each engine: a copy of a migrated one, an SQLite
file under tmp_path or a new PostgreSQL database, dropped afterwards. Transitions are
called as the server calls them, through `Database.write`, and what they wrote is read
back from the database: the task row through `store.tasks.get_task`; the balance, the
ledger, the webhook outbox and SQL NULLs by plain SQL on a connection of the test's own.

Each transition: the states it leaves and enters, the columns it writes (the row after
is the row before with those columns changed, and nothing else) and its refusals, which
answer `Refused` having written nothing. Times are given explicitly (`now`): nothing
here waits.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from imagine.errors import InsufficientCredits, InvalidKey
from imagine.ids import hash_api_key, new_task_id
from imagine.services import billing, keys
from imagine.services.keys import Caller, CreatedKey, PresentedKey
from imagine.services.tasks import lifecycle
from imagine.services.tasks.lifecycle import Applied, Lease, NewTask, Refused, Result
from imagine.services.tasks.payloads import status_data
from imagine.states import TaskStatus
from imagine.store import accounts as billing_repo
from imagine.store.accounts import find_active_key
from imagine.store.db import ConstraintViolation, Database, Tx
from imagine.store.migrate import upgrade
from imagine.store.tasks import (
    KeyAndView,
    TaskRow,
    TaskView,
    get_task,
    get_view,
    get_view_for_key,
)
from imagine.store.wakeups import Due
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    sqlalchemy_url,
)

T = TypeVar("T")
IN_PROGRESS, SUCCESS, FAILED = TaskStatus

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)
NEXT = timedelta(minutes=1)
"""How far ahead the transitions here schedule a task's next look."""
LEASE = timedelta(seconds=60)
LATER = NOW + 2 * LEASE
"""Every lease taken at NOW has run out by then."""
HOUR = timedelta(hours=1)
TINY = timedelta(milliseconds=1)
"""A deadline that has passed a millisecond after the task was created."""
CREDITS = 100
PRICE = 10
MODEL = "grok-imagine/text-to-image"
HOOK = "https://hooks.example.com/imagine"
UPSTREAM_ID = "upstream-1"
RESULT = "https://imagine.test/files/result.png"
PAYLOAD: dict[str, Any] = {"taskId": UPSTREAM_ID, "state": "success"}
"""An upstream's callback."""
WORKER, OTHER = "worker-a", "worker-b"


# -- the databases ------------------------------------------------------------------------


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path | str]:
    """A migrated database of each engine, made once: every test runs on a copy."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("lifecycle") / "template.db"
        asyncio.run(_migrate(_sqlite_url(path)))
        yield path
        return
    url = create_postgres_database()
    try:
        asyncio.run(_migrate(sqlalchemy_url(url)))
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def database(template: Path | str, tmp_path: Path) -> Iterator[Path | str]:
    """This test's own database: an SQLite file, or a PostgreSQL database dropped after."""
    if isinstance(template, Path):
        path = tmp_path / "imagine.db"
        with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
        yield path
        return
    url = create_postgres_database(template=template)
    try:
        yield url
    finally:
        drop_postgres_database(url)


@dataclass
class Store:
    """The database under test, and a plain connection of our own to read it."""

    db: Database
    sqlite: sqlite3.Connection | None
    postgres: Any
    """An asyncpg connection, on PostgreSQL."""

    async def write(
        self, job: Callable[[Tx], Coroutine[Any, Any, T]], *, one_statement: bool = False
    ) -> T:
        return await self.db.write(job, one_statement=one_statement)

    async def task(self, task_id: str) -> TaskRow:
        found = await self.db.read(lambda tx: get_task(tx, task_id))
        assert found is not None
        return found

    async def sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        """The rows of a plain SELECT; its parameters written $1, $2..."""
        if self.sqlite is not None:
            return list(self.sqlite.execute(re.sub(r"\$(\d+)", r"?\1", statement), args))
        return [tuple(row) for row in await self.postgres.fetch(statement, *args)]

    async def balance(self, account_id: str) -> int:
        ((balance,),) = await self.sql("SELECT balance FROM accounts WHERE id = $1", account_id)
        return int(balance)

    async def ledger(self, task_id: str) -> list[tuple[str, int]]:
        """The task's ledger rows, oldest first: (kind, amount)."""
        rows = await self.sql(
            "SELECT kind, amount FROM ledger WHERE task_id = $1 ORDER BY id", task_id
        )
        return [(str(kind), int(amount)) for kind, amount in rows]

    async def deliveries(self, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """The task's queued webhooks: (url, status, payload)."""
        rows = await self.sql(
            "SELECT url, status, payload FROM webhook_deliveries WHERE task_id = $1", task_id
        )
        return [(str(url), str(status), json.loads(payload)) for url, status, payload in rows]

    async def is_null(self, task_id: str, column: str) -> bool:
        """Whether the column holds SQL NULL (JSON 'null' is not)."""
        ((null,),) = await self.sql(f"SELECT {column} IS NULL FROM tasks WHERE id = $1", task_id)
        return bool(null)


@pytest.fixture
async def store(database: Path | str) -> AsyncIterator[Store]:
    if isinstance(database, Path):
        db = Database(_sqlite_url(database))
        with closing(sqlite3.connect(database, isolation_level=None)) as conn:
            try:
                yield Store(db, conn, None)
            finally:
                await db.dispose()
        return
    db = Database(sqlalchemy_url(database))
    conn = await asyncpg.connect(database)
    try:
        yield Store(db, None, conn)
    finally:
        await conn.close()
        await db.dispose()


# -- making tasks -------------------------------------------------------------------------


async def open_account(store: Store, credits: int = CREDITS) -> CreatedKey:
    return await keys.create_key(
        store.db, name="lifecycle " + secrets.token_hex(4), credits=credits
    )


def owner(account: CreatedKey) -> Caller:
    return Caller(key_id=account.key_id, account_id=account.account_id)


def new_task(
    account: CreatedKey, *, callback_url: str | None = None, deadline: timedelta = HOUR
) -> NewTask:
    return NewTask(
        id=new_task_id(),
        model=MODEL,
        request={"model": MODEL, "input": {"prompt": "a lighthouse at dusk"}},
        callback_url=callback_url,
        public=True,
        credits=PRICE,
        source_task_id=None,
        provider="preview",
        callback_token=secrets.token_hex(16),
        deadline=deadline,
    )


async def created(
    store: Store,
    *,
    callback_url: str | None = None,
    deadline: timedelta = HOUR,
    now: datetime = NOW,
) -> TaskRow:
    """A new task through `lifecycle.create`, on a new account with CREDITS credits."""
    account = await open_account(store)
    task = new_task(account, callback_url=callback_url, deadline=deadline)
    made = await store.write(lambda tx: lifecycle.create(tx, task, owner(account), now=now))
    assert made == owner(account)
    return await store.task(task.id)


async def created_as(store: Store, account: CreatedKey, task: NewTask) -> None:
    await store.write(lambda tx: lifecycle.create(tx, task, owner(account), now=NOW))


async def claim(
    store: Store, *, worker: str = WORKER, now: datetime = NOW, limit: int = 10
) -> list[TaskRow]:
    return await store.write(
        lambda tx: lifecycle.claim_due(
            tx, worker_id=worker, now=now, lease_until=now + LEASE, limit=limit
        )
    )


async def take(
    store: Store, task_id: str, *, worker: str = WORKER, now: datetime = NOW
) -> tuple[TaskRow, Lease]:
    """Claim the due tasks for `worker`, this one among them: its row as claimed, the lease."""
    (row,) = [row for row in await claim(store, worker=worker, now=now) if row.id == task_id]
    return row, Lease(task_id, worker)


async def held(
    store: Store,
    *,
    callback_url: str | None = None,
    deadline: timedelta = HOUR,
    worker: str = WORKER,
) -> tuple[TaskRow, Lease]:
    """A new task, claimed at NOW by `worker`."""
    task = await created(store, callback_url=callback_url, deadline=deadline)
    return await take(store, task.id, worker=worker)


async def refresh(
    store: Store, task_id: str, *, now: datetime, checked_before: datetime, worker: str = WORKER
) -> TaskRow | Refused:
    return await store.write(
        lambda tx: lifecycle.claim_for_refresh(
            tx,
            task_id,
            worker_id=worker,
            now=now,
            lease_until=now + LEASE,
            checked_before=checked_before,
        )
    )


def assert_refused(result: object, task_id: str, transition: str) -> None:
    assert isinstance(result, Refused), result
    assert (result.task_id, result.transition) == (task_id, transition)


def released(row: TaskRow, **written: Any) -> TaskRow:
    """The row with `written` changed and the lease handed back."""
    return replace(row, lease_owner=None, lease_expires_at=None, **written)


def status_shape(row: TaskRow) -> dict[str, Any]:
    """The status answer's `data` for the row, as JSON carries it."""
    shape: dict[str, Any] = json.loads(json.dumps(status_data(TaskView.of(row))))
    return shape


class Boom(Exception):
    """Raised by a job after its transition, to roll the transaction back."""


# -- the transitions a worker makes with its lease, as steps tests can be parametrized by

Step = Callable[[Tx, Lease, TaskRow, datetime], Coroutine[Any, Any, Result]]
"""A transition made by the lease's worker on the task (as claimed), at a time."""

LEASED: dict[str, tuple[str, Step]] = {
    "record_submission": (
        "record_submission",
        lambda tx, lease, task, now: lifecycle.record_submission(
            tx,
            lease,
            upstream_id=UPSTREAM_ID,
            provider_state={"job": UPSTREAM_ID},
            next_check_at=now + NEXT,
            keep_lease=False,
            now=now,
        ),
    ),
    "record_submission(keep_lease)": (
        "record_submission",
        lambda tx, lease, task, now: lifecycle.record_submission(
            tx,
            lease,
            upstream_id=UPSTREAM_ID,
            provider_state={"job": UPSTREAM_ID},
            next_check_at=now + NEXT,
            keep_lease=True,
            now=now,
        ),
    ),
    "schedule_next_check": (
        "schedule_next_check",
        lambda tx, lease, task, now: lifecycle.schedule_next_check(
            tx, lease, next_check_at=now + NEXT, callback_read=False, now=now
        ),
    ),
    "defer": (
        "defer",
        lambda tx, lease, task, now: lifecycle.defer(
            tx, lease, next_check_at=now + NEXT, callback_read=False, now=now
        ),
    ),
    "retry_later": (
        "retry_later",
        lambda tx, lease, task, now: lifecycle.retry_later(
            tx,
            lease,
            attempts=1,
            next_check_at=now + NEXT,
            results_to_copy=None,
            callback_read=False,
            now=now,
        ),
    ),
    "fail_over": (
        "fail_over",
        lambda tx, lease, task, now: lifecycle.fail_over(
            tx,
            lease,
            provider="kie",
            attempts=0,
            routes_tried={"preview": 3},
            next_check_at=now + NEXT,
            callback_read=False,
            now=now,
        ),
    ),
    "renew_lease": (
        "renew_lease",
        lambda tx, lease, task, now: lifecycle.renew_lease(tx, lease, until=now + LEASE),
    ),
    "release": ("release", lambda tx, lease, task, now: lifecycle.release(tx, lease)),
    "succeed": (
        "succeed",
        lambda tx, lease, task, now: lifecycle.succeed(
            tx, lease, task, result_urls=[RESULT], now=now
        ),
    ),
    "fail": (
        "fail",
        lambda tx, lease, task, now: lifecycle.fail(
            tx, lease, task, message="the provider refused the prompt", now=now
        ),
    ),
    "expire": ("expire", lambda tx, lease, task, now: lifecycle.expire(tx, lease, task, now=now)),
}

ENDINGS: dict[str, tuple[str, Step]] = {
    "succeed": LEASED["succeed"],
    "fail": LEASED["fail"],
    "expire": LEASED["expire"],
    "cancel": (
        "cancel",
        lambda tx, lease, task, now: lifecycle.cancel(tx, task, paid_provider=False, now=now),
    ),
    "cancel(paid_provider), credits kept": (
        "cancel",
        lambda tx, lease, task, now: lifecycle.cancel(tx, task, paid_provider=True, now=now),
    ),
}
"""The transitions into a final state; on a held task past its deadline, each applies."""

ENDED = {
    "succeed": (SUCCESS, False),
    "fail": (FAILED, True),
    "expire": (FAILED, True),
    "cancel": (FAILED, True),
    "cancel(paid_provider), credits kept": (FAILED, False),
}
"""Each ending's final status and whether it refunded."""

Scheduling = Callable[[Tx, Lease, datetime, bool], Coroutine[Any, Any, Result]]
"""A transition that hands the lease back with the next look at `now + NEXT`, told
whether the step read the task's stored callback."""

SCHEDULING: dict[str, Scheduling] = {
    "schedule_next_check": lambda tx, lease, now, read: lifecycle.schedule_next_check(
        tx, lease, next_check_at=now + NEXT, callback_read=read, now=now
    ),
    "defer": lambda tx, lease, now, read: lifecycle.defer(
        tx, lease, next_check_at=now + NEXT, callback_read=read, now=now
    ),
    "retry_later": lambda tx, lease, now, read: lifecycle.retry_later(
        tx,
        lease,
        attempts=1,
        next_check_at=now + NEXT,
        results_to_copy=None,
        callback_read=read,
        now=now,
    ),
    "fail_over": lambda tx, lease, now, read: lifecycle.fail_over(
        tx,
        lease,
        provider="kie",
        attempts=0,
        routes_tried={"preview": 3},
        next_check_at=now + NEXT,
        callback_read=read,
        now=now,
    ),
}


async def make(store: Store, step: Step, lease: Lease, task: TaskRow, now: datetime) -> Result:
    return await store.write(lambda tx: step(tx, lease, task, now))


# -- create -------------------------------------------------------------------------------


ONE_STATEMENT = pytest.mark.parametrize("one_statement", [False, True], ids=["tx", "one"])
"""Create as a job of its own transaction, and as one statement (PostgreSQL composes the
debit, ledger row, task and NOTIFY in CTEs; SQLite runs it as any job)."""


@ONE_STATEMENT
async def test_create_stores_an_in_progress_task_due_now(store: Store, one_statement: bool) -> None:
    account = await open_account(store)
    task = replace(new_task(account, callback_url=HOOK), source_task_id=new_task_id())
    result = await store.write(
        lambda tx: lifecycle.create(tx, task, owner(account), now=NOW),
        one_statement=one_statement,
    )
    assert result == owner(account)
    assert await store.task(task.id) == TaskRow(
        id=task.id,
        account_id=account.account_id,
        api_key_id=account.key_id,
        model=MODEL,
        status=IN_PROGRESS,
        request=task.request,
        callback_url=HOOK,
        public=True,
        credits=PRICE,
        refunded=False,
        source_task_id=task.source_task_id,
        provider="preview",
        upstream_id=None,
        provider_state=None,
        result_urls=None,
        error_message=None,
        attempts=0,
        checked_at=None,
        next_check_at=NOW,
        lease_owner=None,
        lease_expires_at=None,
        deadline_at=NOW + HOUR,
        created_at=NOW,
        updated_at=NOW,
        finished_at=None,
        callback_token=task.callback_token,
        upstream_callback=None,
        routes_tried=None,
        results_to_copy=None,
        progress=None,
        result_sizes=None,
    )


@ONE_STATEMENT
async def test_create_debits_the_price(store: Store, one_statement: bool) -> None:
    account = await open_account(store)
    task = new_task(account)
    await store.write(
        lambda tx: lifecycle.create(tx, task, owner(account), now=NOW),
        one_statement=one_statement,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE)]
    assert await store.balance(account.account_id) == CREDITS - PRICE
    ((after,),) = await store.sql("SELECT balance_after FROM ledger WHERE task_id = $1", task.id)
    assert after == CREDITS - PRICE


@ONE_STATEMENT
@pytest.mark.parametrize("by_key", [False, True], ids=["caller", "presented-key"])
async def test_create_without_enough_credits_stores_nothing(
    store: Store, one_statement: bool, by_key: bool
) -> None:
    account = await open_account(store, credits=PRICE - 1)
    task = new_task(account)
    who: lifecycle.Owner = PresentedKey(hash_api_key(account.key)) if by_key else owner(account)
    work = store.db.wakeups.subscribe(Due.WORK)
    with pytest.raises(InsufficientCredits, match=f"the balance is {PRICE - 1}"):
        await store.write(
            lambda tx: lifecycle.create(tx, task, who, now=NOW), one_statement=one_statement
        )
    assert await store.db.read(lambda tx: get_task(tx, task.id)) is None
    assert await store.ledger(task.id) == []
    assert await store.balance(account.account_id) == PRICE - 1
    assert not work.is_set()


@ONE_STATEMENT
async def test_create_by_a_presented_key_checks_it_and_answers_whose_task_it_is(
    store: Store, one_statement: bool
) -> None:
    account = await open_account(store)
    task = new_task(account)
    presented = PresentedKey(hash_api_key(account.key))
    made = await store.write(
        lambda tx: lifecycle.create(tx, task, presented, now=NOW), one_statement=one_statement
    )
    assert made == owner(account)
    stored = await store.task(task.id)
    assert (stored.account_id, stored.api_key_id) == (account.account_id, account.key_id)
    assert await store.ledger(task.id) == [("debit", -PRICE)]
    assert await store.balance(account.account_id) == CREDITS - PRICE


@ONE_STATEMENT
async def test_create_by_an_unknown_or_revoked_key_stores_and_debits_nothing(
    store: Store, one_statement: bool
) -> None:
    account = await open_account(store)
    revoked = await open_account(store)
    await keys.revoke_key(store.db, revoked.key_id)
    for key in ("imk_not_a_key_we_made", revoked.key):
        task = new_task(account)
        presented = PresentedKey(hash_api_key(key))

        async def create(
            tx: Tx, task: NewTask = task, presented: PresentedKey = presented
        ) -> Caller:
            return await lifecycle.create(tx, task, presented, now=NOW)

        with pytest.raises(InvalidKey):
            await store.write(create, one_statement=one_statement)
        assert not await store.sql("SELECT id FROM tasks WHERE id = $1", task.id)
        assert await store.ledger(task.id) == []
    assert await store.balance(revoked.account_id) == CREDITS


@ONE_STATEMENT
async def test_creates_at_the_same_moment_are_each_answered_and_one_failing_fails_alone(
    store: Store, one_statement: bool
) -> None:
    """On PostgreSQL creates that arrive together commit together (store/batches.py):
    each caller gets its own answer, a create that fails (here: a task id already taken)
    fails alone, and one account's many creates are each debited once."""
    accounts = [await open_account(store, credits=1000) for _ in range(4)]
    taken = new_task(accounts[0])
    await store.write(lambda tx: lifecycle.create(tx, taken, owner(accounts[0]), now=NOW))
    wanted = [(accounts[i % 4], new_task(accounts[i % 4])) for i in range(40)]
    wanted.insert(17, (accounts[1], replace(new_task(accounts[1]), id=taken.id)))

    async def create(account: CreatedKey, task: NewTask) -> Caller:
        presented = PresentedKey(hash_api_key(account.key))
        return await store.write(
            lambda tx: lifecycle.create(tx, task, presented, now=NOW),
            one_statement=one_statement,
        )

    outcomes = await asyncio.gather(
        *(create(account, task) for account, task in wanted), return_exceptions=True
    )
    assert isinstance(outcomes.pop(17), ConstraintViolation)
    del wanted[17]
    assert outcomes == [owner(account) for account, _ in wanted]
    for _, task in wanted:
        assert await store.ledger(task.id) == [("debit", -PRICE)]
    assert [await store.balance(account.account_id) for account in accounts] == [
        1000 - 11 * PRICE,
        1000 - 10 * PRICE,
        1000 - 10 * PRICE,
        1000 - 10 * PRICE,
    ]


async def test_reads_at_the_same_moment_each_find_their_own_answer(store: Store) -> None:
    """On PostgreSQL the key check and the status read of polls that arrive together
    share a round trip (store/batches.py): each still gets the answer to what it asked,
    whether its key is unknown, revoked or valid and the task its own, another's or none."""
    accounts = [await open_account(store) for _ in range(3)]
    revoked = await open_account(store)
    await keys.revoke_key(store.db, revoked.key_id)
    task_ids = []
    for account in accounts:
        task = new_task(account)
        await created_as(store, account, task)
        task_ids.append(task.id)
    presented = [*accounts, revoked]
    asked = [
        (hash_api_key(key), task_id)
        for key in [*(account.key for account in presented), "sk-unknown"]
        for task_id in [*task_ids, new_task_id()]
    ] * 3

    def expected(key_hash: str, task_id: str) -> tuple[str, str | None] | None:
        for account, own in zip(presented, [*task_ids, None], strict=True):
            if hash_api_key(account.key) == key_hash:
                if account is revoked:
                    return None
                return account.account_id, task_id if own == task_id else None
        return None

    def answer(found: KeyAndView | None) -> tuple[str, str | None] | None:
        if found is None:
            return None
        return found.account_id, None if found.view is None else found.view.id

    async def view(key_hash: str, task_id: str) -> KeyAndView | None:
        return await store.db.read(
            lambda tx: get_view_for_key(tx, key_hash, task_id), snapshot=False
        )

    views = await asyncio.gather(*(view(h, t) for h, t in asked))
    assert [answer(found) for found in views] == [expected(h, t) for h, t in asked]
    callers = await asyncio.gather(
        *(keys.authenticate_hash(store.db, h) for h, _ in asked), return_exceptions=True
    )
    for (key_hash, _), caller in zip(asked, callers, strict=True):
        if (wanted := expected(key_hash, "")) is None:
            assert isinstance(caller, InvalidKey)
        else:
            assert isinstance(caller, Caller)
            assert caller.account_id == wanted[0]


async def test_a_read_holding_the_only_connection_still_runs_its_batchable_statement(
    database: Path | str,
) -> None:
    """A job that took a connection for one statement runs its next, batchable one on
    that connection: a batch would wait for a second connection a pool of one can't
    give."""
    db = Database(
        _sqlite_url(database) if isinstance(database, Path) else sqlalchemy_url(database),
        pool_size=1,
    )
    try:
        account = await keys.create_key(db, name="alone", credits=CREDITS)

        async def both(tx: Tx) -> tuple[int | None, bool]:
            balance = await billing_repo.get_balance(tx, account.account_id)
            found = await find_active_key(tx, hash_api_key(account.key))
            return balance, found is not None

        answers = await asyncio.wait_for(
            asyncio.gather(*(db.read(both, snapshot=False) for _ in range(5))), 30
        )
        assert answers == [(CREDITS, True)] * 5
    finally:
        await db.dispose()


@ONE_STATEMENT
async def test_create_wakes_the_workers_of_other_processes(
    store: Store, database: Path | str, one_statement: bool
) -> None:
    if isinstance(database, Path):
        pytest.skip("processes on one SQLite file share no channel: they poll")
    other = Database(sqlalchemy_url(database))
    try:
        await other.listen()
        heard = other.wakeups.subscribe(Due.WORK)
        await asyncio.wait_for(other.listening(), 30)
        heard.clear()  # the listener wakes everyone once it is connected
        account = await open_account(store)
        task = new_task(account)
        await store.write(
            lambda tx: lifecycle.create(tx, task, owner(account), now=NOW),
            one_statement=one_statement,
        )
        await asyncio.wait_for(heard.wait(), 30)
    finally:
        await other.dispose()


async def test_create_announces_work_once_committed(store: Store) -> None:
    account = await open_account(store)
    task = new_task(account)
    work = store.db.wakeups.subscribe(Due.WORK)

    async def create(tx: Tx) -> bool:
        await lifecycle.create(tx, task, owner(account), now=NOW)
        return work.is_set()

    assert await store.write(create) is False, "announced before the commit"
    assert work.is_set()


async def test_create_in_a_transaction_that_fails_announces_and_stores_nothing(
    store: Store,
) -> None:
    account = await open_account(store)
    task = new_task(account)
    work = store.db.wakeups.subscribe(Due.WORK)

    async def create_then_fail(tx: Tx) -> None:
        await lifecycle.create(tx, task, owner(account), now=NOW)
        raise Boom

    with pytest.raises(Boom):
        await store.write(create_then_fail)
    assert not work.is_set()
    assert await store.db.read(lambda tx: get_task(tx, task.id)) is None
    assert await store.ledger(task.id) == []
    assert await store.balance(account.account_id) == CREDITS


# -- claim_due ----------------------------------------------------------------------------


async def test_claim_due_leases_a_due_task_to_the_worker(store: Store) -> None:
    task = await created(store)
    claimed = await claim(store, now=NOW + SECOND)
    leased = replace(task, lease_owner=WORKER, lease_expires_at=NOW + SECOND + LEASE)
    assert claimed == [leased]
    assert await store.task(task.id) == leased


async def test_claim_due_takes_the_longest_waiting_first_up_to_the_limit(store: Store) -> None:
    newest = await created(store, now=NOW + 2 * SECOND)
    oldest = await created(store, now=NOW)
    middle = await created(store, now=NOW + SECOND)
    first = await claim(store, now=NOW + 3 * SECOND, limit=2)
    assert {row.id for row in first} == {oldest.id, middle.id}
    assert (await store.task(newest.id)).lease_owner is None
    second = await claim(store, worker=OTHER, now=NOW + 3 * SECOND, limit=2)
    assert [row.id for row in second] == [newest.id]


async def test_claim_due_takes_over_a_lease_that_ran_out(store: Store) -> None:
    task, _ = await held(store)
    (taken,) = await claim(store, worker=OTHER, now=LATER)
    assert taken == replace(task, lease_owner=OTHER, lease_expires_at=LATER + LEASE)


async def test_claim_due_skips_leased_not_due_and_final_tasks(store: Store) -> None:
    leased, _ = await held(store, worker=OTHER)
    not_due, lease = await held(store)
    assert await make(store, LEASED["schedule_next_check"][1], lease, not_due, NOW) == Applied(
        not_due.id, IN_PROGRESS
    )
    final = await created(store)
    assert isinstance(
        await store.write(lambda tx: lifecycle.cancel(tx, final, paid_provider=False, now=NOW)),
        Applied,
    )
    before = [await store.task(task.id) for task in (leased, not_due, final)]
    assert await claim(store, now=NOW + SECOND) == []
    assert [await store.task(task.id) for task in (leased, not_due, final)] == before


# -- claim_for_refresh --------------------------------------------------------------------


async def test_claim_for_refresh_leases_a_task_never_checked(store: Store) -> None:
    task = await created(store)
    claimed = await refresh(store, task.id, now=NOW + SECOND, checked_before=NOW)
    leased = replace(task, lease_owner=WORKER, lease_expires_at=NOW + SECOND + LEASE)
    assert claimed == leased
    assert await store.task(task.id) == leased


async def test_claim_for_refresh_leases_a_task_not_due_yet_checked_before(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["record_submission"][1], lease, task, NOW)
    sent = await store.task(task.id)
    assert sent.next_check_at == NOW + NEXT
    now = NOW + 10 * SECOND
    claimed = await refresh(store, task.id, now=now, checked_before=NOW)
    assert claimed == replace(sent, lease_owner=WORKER, lease_expires_at=now + LEASE)


async def test_claim_for_refresh_refuses_a_task_backing_off(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["retry_later"][1], lease, task, NOW)
    before = await store.task(task.id)
    assert before.attempts == 1
    refused = await refresh(store, task.id, now=NOW + SECOND, checked_before=NOW + SECOND)
    assert_refused(refused, task.id, "claim_for_refresh")
    assert await store.task(task.id) == before


async def test_claim_for_refresh_refuses_a_task_checked_since(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["record_submission"][1], lease, task, NOW)
    before = await store.task(task.id)
    refused = await refresh(store, task.id, now=NOW + SECOND, checked_before=NOW - SECOND)
    assert_refused(refused, task.id, "claim_for_refresh")
    assert await store.task(task.id) == before


async def test_claim_for_refresh_refuses_a_leased_task(store: Store) -> None:
    task, _ = await held(store, worker=OTHER)
    refused = await refresh(store, task.id, now=NOW + SECOND, checked_before=NOW + SECOND)
    assert_refused(refused, task.id, "claim_for_refresh")
    assert await store.task(task.id) == task


async def test_claim_for_refresh_refuses_a_final_task(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["succeed"][1], lease, task, NOW)
    before = await store.task(task.id)
    refused = await refresh(store, task.id, now=NOW + SECOND, checked_before=NOW + SECOND)
    assert_refused(refused, task.id, "claim_for_refresh")
    assert await store.task(task.id) == before


# -- record_submission --------------------------------------------------------------------


async def submit(store: Store, lease: Lease, *, keep_lease: bool, now: datetime) -> Result:
    return await store.write(
        lambda tx: lifecycle.record_submission(
            tx,
            lease,
            upstream_id=UPSTREAM_ID,
            provider_state={"job": UPSTREAM_ID},
            next_check_at=now + NEXT,
            keep_lease=keep_lease,
            now=now,
        )
    )


async def test_record_submission_keeps_the_upstream_id_and_hands_the_lease_back(
    store: Store,
) -> None:
    task, lease = await held(store)
    now = NOW + SECOND
    assert await submit(store, lease, keep_lease=False, now=now) == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == released(
        task,
        upstream_id=UPSTREAM_ID,
        provider_state={"job": UPSTREAM_ID},
        checked_at=now,
        attempts=0,
        next_check_at=now + NEXT,
        updated_at=now,
    )


async def test_record_submission_with_keep_lease_keeps_the_lease(store: Store) -> None:
    task, lease = await held(store)
    now = NOW + SECOND
    assert await submit(store, lease, keep_lease=True, now=now) == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == replace(
        task,
        upstream_id=UPSTREAM_ID,
        provider_state={"job": UPSTREAM_ID},
        checked_at=now,
        attempts=0,
        next_check_at=now + NEXT,
        updated_at=now,
    )


async def test_record_submission_refuses_a_task_already_sent(store: Store) -> None:
    task, lease = await held(store)
    await submit(store, lease, keep_lease=True, now=NOW)
    before = await store.task(task.id)
    assert_refused(
        await submit(store, lease, keep_lease=True, now=NOW + SECOND), task.id, "record_submission"
    )
    assert await store.task(task.id) == before


async def test_record_submission_without_provider_state_stores_sql_null(store: Store) -> None:
    task, lease = await held(store)
    await store.write(
        lambda tx: lifecycle.record_submission(
            tx,
            lease,
            upstream_id=UPSTREAM_ID,
            provider_state=None,
            next_check_at=NOW + NEXT,
            keep_lease=False,
            now=NOW,
        )
    )
    assert (await store.task(task.id)).provider_state is None
    assert await store.is_null(task.id, "provider_state"), "stored as JSON 'null'"


async def test_record_submission_keeps_a_callback_that_arrived_before_it_due_now(
    store: Store,
) -> None:
    task, lease = await held(store)
    await store.write(lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=NOW))
    now = NOW + SECOND
    await submit(store, lease, keep_lease=False, now=now)
    row = await store.task(task.id)
    assert (row.next_check_at, row.upstream_callback) == (now, PAYLOAD)


# -- schedule_next_check, defer, retry_later ----------------------------------------------


async def backing_off(store: Store, attempts: int) -> tuple[TaskRow, Lease]:
    """A task that failed `attempts` times in a row, claimed again at NOW + SECOND."""
    task, lease = await held(store)
    await store.write(
        lambda tx: lifecycle.retry_later(
            tx,
            lease,
            attempts=attempts,
            next_check_at=NOW + SECOND,
            results_to_copy=[RESULT],
            callback_read=False,
            now=NOW,
        )
    )
    return await take(store, task.id, now=NOW + SECOND)


async def test_schedule_next_check_sets_the_next_look_and_starts_the_error_count_again(
    store: Store,
) -> None:
    task, lease = await backing_off(store, attempts=2)
    now = NOW + 2 * SECOND
    result = await store.write(
        lambda tx: lifecycle.schedule_next_check(
            tx, lease, next_check_at=now + NEXT, callback_read=False, now=now
        )
    )
    assert result == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == released(
        task, checked_at=now, attempts=0, next_check_at=now + NEXT, updated_at=now
    )


async def checked(store: Store, lease: Lease, *, now: datetime, progress: int | None) -> None:
    """The provider said the task runs, `progress` percent done; next look due at once."""
    await store.write(
        lambda tx: lifecycle.schedule_next_check(
            tx, lease, next_check_at=now, callback_read=False, now=now, progress=progress
        )
    )


async def test_schedule_next_check_keeps_the_progress_the_provider_last_reported(
    store: Store,
) -> None:
    task, lease = await held(store)
    seen = []
    for step, progress in enumerate([None, 40, None, 75], start=1):
        now = NOW + step * SECOND
        await checked(store, lease, now=now, progress=progress)
        shown = await store.db.read(lambda tx: get_view(tx, task.id, task.account_id))
        assert shown is not None
        seen.append((shown.progress, status_data(shown).get("progress")))
        lease = (await take(store, task.id, now=now))[1]
    assert seen == [(None, None), (40, 40), (40, 40), (75, 75)]


async def test_defer_sets_the_next_look_without_counting_an_attempt(store: Store) -> None:
    task, lease = await backing_off(store, attempts=2)
    now = NOW + 2 * SECOND
    result = await store.write(
        lambda tx: lifecycle.defer(
            tx, lease, next_check_at=now + NEXT, callback_read=False, now=now
        )
    )
    assert result == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == released(task, next_check_at=now + NEXT, updated_at=now)


async def test_retry_later_counts_the_errors_and_keeps_the_results_to_copy(store: Store) -> None:
    task, lease = await held(store)
    now = NOW + SECOND
    result = await store.write(
        lambda tx: lifecycle.retry_later(
            tx,
            lease,
            attempts=3,
            next_check_at=now + NEXT,
            results_to_copy=[RESULT],
            callback_read=False,
            now=now,
        )
    )
    assert result == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == released(
        task, attempts=3, results_to_copy=[RESULT], next_check_at=now + NEXT, updated_at=now
    )


async def test_retry_later_without_results_to_copy_stores_sql_null(store: Store) -> None:
    task, lease = await backing_off(store, attempts=1)
    await store.write(
        lambda tx: lifecycle.retry_later(
            tx,
            lease,
            attempts=2,
            next_check_at=NOW + NEXT,
            results_to_copy=None,
            callback_read=False,
            now=NOW + 2 * SECOND,
        )
    )
    assert (await store.task(task.id)).results_to_copy is None
    assert await store.is_null(task.id, "results_to_copy"), "stored as JSON 'null'"


@pytest.mark.parametrize("step", SCHEDULING)
async def test_a_callback_that_arrived_while_held_keeps_the_task_due_now(
    store: Store, step: str
) -> None:
    task, lease = await held(store)
    stored = await store.write(
        lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=NOW + SECOND)
    )
    assert stored == Applied(task.id, IN_PROGRESS)
    now = NOW + 2 * SECOND
    assert await store.write(lambda tx: SCHEDULING[step](tx, lease, now, False)) == Applied(
        task.id, IN_PROGRESS
    )
    row = await store.task(task.id)
    assert (row.next_check_at, row.upstream_callback, row.lease_owner) == (now, PAYLOAD, None)


@pytest.mark.parametrize("step", SCHEDULING)
async def test_a_callback_the_step_read_is_cleared_and_the_next_look_kept(
    store: Store, step: str
) -> None:
    task, lease = await held(store)
    await store.write(
        lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=NOW + SECOND)
    )
    now = NOW + 2 * SECOND
    assert await store.write(lambda tx: SCHEDULING[step](tx, lease, now, True)) == Applied(
        task.id, IN_PROGRESS
    )
    row = await store.task(task.id)
    assert (row.next_check_at, row.upstream_callback, row.lease_owner) == (now + NEXT, None, None)
    assert await store.is_null(task.id, "upstream_callback"), "cleared to JSON 'null'"


# -- fail_over ----------------------------------------------------------------------------


async def test_fail_over_moves_an_unsent_task_to_another_route(store: Store) -> None:
    task, lease = await backing_off(store, attempts=3)
    assert task.results_to_copy == [RESULT]
    now = NOW + 2 * SECOND
    result = await store.write(
        lambda tx: lifecycle.fail_over(
            tx,
            lease,
            provider="kie",
            attempts=0,
            routes_tried={"preview": 3},
            next_check_at=now + NEXT,
            callback_read=False,
            now=now,
        )
    )
    assert result == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == released(
        task,
        provider="kie",
        attempts=0,
        routes_tried={"preview": 3},
        provider_state=None,
        results_to_copy=None,
        next_check_at=now + NEXT,
        updated_at=now,
    )
    assert await store.is_null(task.id, "provider_state")
    assert await store.is_null(task.id, "results_to_copy")


async def test_fail_over_refuses_a_task_already_sent(store: Store) -> None:
    task, lease = await held(store)
    await submit(store, lease, keep_lease=True, now=NOW)
    before = await store.task(task.id)
    assert_refused(
        await make(store, LEASED["fail_over"][1], lease, task, NOW + SECOND), task.id, "fail_over"
    )
    assert await store.task(task.id) == before


# -- renew_lease, release -----------------------------------------------------------------


async def test_renew_lease_holds_the_task_longer(store: Store) -> None:
    task, lease = await held(store)
    until = NOW + 5 * LEASE
    assert await store.write(lambda tx: lifecycle.renew_lease(tx, lease, until=until)) == Applied(
        task.id, IN_PROGRESS
    )
    assert await store.task(task.id) == replace(task, lease_expires_at=until)


async def test_release_hands_the_lease_back_as_due_as_it_was(store: Store) -> None:
    task, lease = await held(store)
    assert await store.write(lambda tx: lifecycle.release(tx, lease)) == Applied(
        task.id, IN_PROGRESS
    )
    assert await store.task(task.id) == released(task)
    assert [row.id for row in await claim(store, worker=OTHER, now=NOW)] == [task.id]


# -- store_callback -----------------------------------------------------------------------


async def test_store_callback_keeps_the_payload_and_makes_the_task_due_now(store: Store) -> None:
    task, lease = await held(store)
    await submit(store, lease, keep_lease=False, now=NOW)
    before = await store.task(task.id)
    assert before.next_check_at == NOW + NEXT
    now = NOW + SECOND
    result = await store.write(
        lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=now)
    )
    assert result == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == replace(
        before, upstream_callback=PAYLOAD, next_check_at=now, updated_at=now
    )


async def test_store_callback_leaves_the_holders_lease_alone(store: Store) -> None:
    task, _ = await held(store)
    now = NOW + SECOND
    await store.write(lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=now))
    assert await store.task(task.id) == replace(
        task, upstream_callback=PAYLOAD, next_check_at=now, updated_at=now
    )


async def test_store_callback_announces_work(store: Store) -> None:
    task = await created(store)
    work = store.db.wakeups.subscribe(Due.WORK)
    await store.write(lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=NOW))
    assert work.is_set()


async def test_store_callback_refuses_a_final_task(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["succeed"][1], lease, task, NOW)
    before = await store.task(task.id)
    work = store.db.wakeups.subscribe(Due.WORK)
    result = await store.write(
        lambda tx: lifecycle.store_callback(tx, task.id, payload=PAYLOAD, now=NOW + SECOND)
    )
    assert_refused(result, task.id, "store_callback")
    assert await store.task(task.id) == before
    assert not work.is_set()


# -- succeed ------------------------------------------------------------------------------


async def test_succeed_ends_the_task_with_its_results(store: Store) -> None:
    task, lease = await backing_off(store, attempts=1)
    now = NOW + 2 * SECOND
    result = await store.write(
        lambda tx: lifecycle.succeed(tx, lease, task, result_urls=[RESULT], now=now)
    )
    assert result == Applied(task.id, SUCCESS)
    assert await store.task(task.id) == released(
        task,
        status=SUCCESS,
        result_urls=[RESULT],
        results_to_copy=None,
        finished_at=now,
        updated_at=now,
        checked_at=now,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE)]


async def test_succeed_queues_the_webhook_with_the_status_and_announces_it(
    store: Store,
) -> None:
    task, lease = await held(store, callback_url=HOOK)
    delivery = store.db.wakeups.subscribe(Due.DELIVERY)
    await make(store, LEASED["succeed"][1], lease, task, NOW + SECOND)
    ((url, status, payload),) = await store.deliveries(task.id)
    assert (url, status, payload["code"], payload["message"]) == (HOOK, "pending", 200, "success")
    data = payload["data"]
    assert data == status_shape(await store.task(task.id))
    assert (data["task_id"], data["status"], data["response"], data["consumed_credits"]) == (
        task.id,
        "SUCCESS",
        {"resultUrls": [RESULT]},
        PRICE,
    )
    assert delivery.is_set()


async def test_succeed_without_a_callback_url_queues_no_webhook(store: Store) -> None:
    task, lease = await held(store)
    delivery = store.db.wakeups.subscribe(Due.DELIVERY)
    assert isinstance(await make(store, LEASED["succeed"][1], lease, task, NOW), Applied)
    assert await store.deliveries(task.id) == []
    assert not delivery.is_set()


# -- fail ---------------------------------------------------------------------------------


async def test_fail_ends_the_task_refunded(store: Store) -> None:
    task, lease = await held(store)
    now = NOW + SECOND
    result = await store.write(
        lambda tx: lifecycle.fail(tx, lease, task, message="the prompt was refused", now=now)
    )
    assert result == Applied(task.id, FAILED, refunded=True)
    assert await store.task(task.id) == released(
        task,
        status=FAILED,
        error_message="the prompt was refused",
        refunded=True,
        finished_at=now,
        updated_at=now,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]
    assert await store.balance(task.account_id) == CREDITS


async def test_fail_keeps_no_nul_and_at_most_2000_characters_of_the_message(
    store: Store,
) -> None:
    task, lease = await held(store)
    message = "bad\x00input " + "x" * 3000
    await store.write(lambda tx: lifecycle.fail(tx, lease, task, message=message, now=NOW))
    stored = (await store.task(task.id)).error_message
    assert stored == message.replace("\x00", "")[: lifecycle.MAX_MESSAGE]
    assert len(stored) == 2000


async def test_a_refund_cannot_be_made_twice(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["fail"][1], lease, task, NOW)
    with pytest.raises(ConstraintViolation):
        await store.write(
            lambda tx: billing.refund_task(
                tx, account_id=task.account_id, task_id=task.id, amount=PRICE, now=NOW
            )
        )
    assert await store.balance(task.account_id) == CREDITS
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]


# -- expire -------------------------------------------------------------------------------


async def test_expire_refuses_a_task_before_its_deadline(store: Store) -> None:
    task, lease = await held(store, deadline=TINY)
    result = await store.write(lambda tx: lifecycle.expire(tx, lease, task, now=NOW))
    assert_refused(result, task.id, "expire")
    assert await store.task(task.id) == task
    assert await store.ledger(task.id) == [("debit", -PRICE)]


async def test_expire_fails_a_task_at_its_deadline_refunded(store: Store) -> None:
    task, lease = await held(store, deadline=TINY)
    now = NOW + TINY
    result = await store.write(lambda tx: lifecycle.expire(tx, lease, task, now=now))
    assert result == Applied(task.id, FAILED, refunded=True)
    assert await store.task(task.id) == released(
        task,
        status=FAILED,
        error_message=lifecycle.deadline_message(task),
        refunded=True,
        finished_at=now,
        updated_at=now,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]
    assert await store.balance(task.account_id) == CREDITS


# -- cancel -------------------------------------------------------------------------------


async def cancel(store: Store, task: TaskRow, *, paid_provider: bool, now: datetime) -> Result:
    return await store.write(
        lambda tx: lifecycle.cancel(tx, task, paid_provider=paid_provider, now=now)
    )


async def test_cancel_without_a_paid_provider_refunds_even_a_task_sent_and_held(
    store: Store,
) -> None:
    task, lease = await held(store)
    await submit(store, lease, keep_lease=True, now=NOW)
    before = await store.task(task.id)
    now = NOW + SECOND
    assert await cancel(store, task, paid_provider=False, now=now) == Applied(
        task.id, FAILED, refunded=True
    )
    assert await store.task(task.id) == released(
        before,
        status=FAILED,
        error_message=lifecycle.CANCELLED,
        refunded=True,
        finished_at=now,
        updated_at=now,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]
    assert await store.balance(task.account_id) == CREDITS


async def test_cancel_with_a_paid_provider_refunds_a_task_unsent_and_unleased(
    store: Store,
) -> None:
    task = await created(store)
    now = NOW + SECOND
    assert await cancel(store, task, paid_provider=True, now=now) == Applied(
        task.id, FAILED, refunded=True
    )
    assert await store.task(task.id) == replace(
        task,
        status=FAILED,
        error_message=lifecycle.CANCELLED,
        refunded=True,
        finished_at=now,
        updated_at=now,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]


async def test_cancel_with_a_paid_provider_keeps_the_credits_of_a_sent_task(
    store: Store,
) -> None:
    task, lease = await held(store)
    await submit(store, lease, keep_lease=False, now=NOW)
    sent = await store.task(task.id)
    now = NOW + SECOND
    assert await cancel(store, sent, paid_provider=True, now=now) == Applied(
        task.id, FAILED, refunded=False
    )
    after = await store.task(task.id)
    assert after == replace(
        sent,
        status=FAILED,
        error_message=lifecycle.kept_message(sent),
        refunded=False,
        finished_at=now,
        updated_at=now,
    )
    assert after.error_message is not None
    assert "its credits are kept" in after.error_message
    assert await store.ledger(task.id) == [("debit", -PRICE)]
    assert await store.balance(task.account_id) == CREDITS - PRICE


async def test_cancel_with_a_paid_provider_keeps_the_credits_of_a_task_being_sent(
    store: Store,
) -> None:
    task, _ = await held(store)
    now = NOW + SECOND
    assert await cancel(store, task, paid_provider=True, now=now) == Applied(
        task.id, FAILED, refunded=False
    )
    assert await store.task(task.id) == released(
        task,
        status=FAILED,
        error_message=lifecycle.kept_message(task),
        refunded=False,
        finished_at=now,
        updated_at=now,
    )
    assert await store.ledger(task.id) == [("debit", -PRICE)]


@pytest.mark.parametrize("paid_provider", [False, True])
async def test_cancel_never_refunds_twice(store: Store, paid_provider: bool) -> None:
    task = await created(store)
    await cancel(store, task, paid_provider=False, now=NOW)
    before = await store.task(task.id)
    assert_refused(
        await cancel(store, task, paid_provider=paid_provider, now=NOW + SECOND), task.id, "cancel"
    )
    assert await store.task(task.id) == before
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]
    assert await store.balance(task.account_id) == CREDITS


# -- every final state --------------------------------------------------------------------


@pytest.mark.parametrize("ending", ENDINGS)
async def test_every_ending_queues_the_webhook_with_the_final_status(
    store: Store, ending: str
) -> None:
    task, lease = await held(store, callback_url=HOOK, deadline=TINY)
    delivery = store.db.wakeups.subscribe(Due.DELIVERY)
    result = await make(store, ENDINGS[ending][1], lease, task, NOW + SECOND)
    status, refunded = ENDED[ending]
    assert result == Applied(task.id, status, refunded=refunded)
    final = await store.task(task.id)
    assert (final.status, final.refunded) == (status, refunded)
    ((url, queued, payload),) = await store.deliveries(task.id)
    assert (url, queued) == (HOOK, "pending")
    assert payload == {"code": 200, "message": "success", "data": status_shape(final)}
    assert payload["data"]["consumed_credits"] == (0 if refunded else PRICE)
    assert delivery.is_set()


@pytest.mark.parametrize("ending", ENDINGS)
async def test_no_ending_queues_a_webhook_without_a_callback_url(store: Store, ending: str) -> None:
    task, lease = await held(store, deadline=TINY)
    delivery = store.db.wakeups.subscribe(Due.DELIVERY)
    assert isinstance(await make(store, ENDINGS[ending][1], lease, task, NOW + SECOND), Applied)
    assert await store.deliveries(task.id) == []
    assert not delivery.is_set()


@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_final_task_cannot_end_again(store: Store, ending: str) -> None:
    task, lease = await held(store, callback_url=HOOK, deadline=TINY)
    assert isinstance(await make(store, ENDINGS[ending][1], lease, task, NOW + SECOND), Applied)
    final = await store.task(task.id)
    ledger = await store.ledger(task.id)
    deliveries = await store.deliveries(task.id)
    for transition, step in ENDINGS.values():
        assert_refused(await make(store, step, lease, task, NOW + 2 * SECOND), task.id, transition)
    assert await store.task(task.id) == final
    assert await store.ledger(task.id) == ledger
    assert await store.deliveries(task.id) == deliveries


@pytest.mark.parametrize("step", LEASED)
async def test_a_final_task_refuses_every_leased_transition(store: Store, step: str) -> None:
    """Cancelled while a worker held it: the worker's next write matches no row."""
    task, lease = await held(store, deadline=TINY)
    await cancel(store, task, paid_provider=False, now=NOW + SECOND)
    final = await store.task(task.id)
    transition, run = LEASED[step]
    assert_refused(await make(store, run, lease, task, NOW + 2 * SECOND), task.id, transition)
    assert await store.task(task.id) == final
    assert await store.ledger(task.id) == [("debit", -PRICE), ("refund", PRICE)]


@pytest.mark.parametrize("step", LEASED)
async def test_a_lost_lease_cannot_write(store: Store, step: str) -> None:
    """The lease ran out and another worker claimed the task: each of the first worker's
    transitions is refused and writes nothing, and the same made by the new holder
    applies (so the refusal is the lease's)."""
    task, lease = await held(store, deadline=TINY)
    taken, new_lease = await take(store, task.id, worker=OTHER, now=LATER)
    transition, run = LEASED[step]
    assert_refused(await make(store, run, lease, task, LATER), task.id, transition)
    assert await store.task(task.id) == taken
    assert await store.ledger(task.id) == [("debit", -PRICE)]
    assert await store.deliveries(task.id) == []
    assert isinstance(await make(store, run, new_lease, taken, LATER), Applied)


# -- unpublish ----------------------------------------------------------------------------


async def test_unpublish_takes_the_owners_task_out_of_the_gallery(store: Store) -> None:
    task = await created(store)
    assert await store.write(lambda tx: lifecycle.unpublish(tx, task.id, task.account_id))
    assert await store.task(task.id) == replace(task, public=False)


async def test_unpublish_takes_a_finished_task_out_too(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["succeed"][1], lease, task, NOW)
    finished = await store.task(task.id)
    assert await store.write(lambda tx: lifecycle.unpublish(tx, task.id, task.account_id))
    assert await store.task(task.id) == replace(finished, public=False)


async def test_unpublish_leaves_another_accounts_task_alone(store: Store) -> None:
    task = await created(store)
    stranger = await open_account(store)
    assert not await store.write(lambda tx: lifecycle.unpublish(tx, task.id, stranger.account_id))
    assert await store.task(task.id) == task


# -- the refresh of a process without a worker ------------------------------------------


async def _sent_only(store: Store, task_id: str) -> TaskRow | Refused:
    return await store.write(
        lambda tx: lifecycle.claim_for_refresh(
            tx,
            task_id,
            worker_id=WORKER,
            now=NOW,
            lease_until=NOW + LEASE,
            checked_before=NOW,
            sent_only=True,
        )
    )


async def test_a_refresh_of_sent_tasks_only_refuses_one_not_sent(store: Store) -> None:
    task = await created(store)
    assert_refused(await _sent_only(store, task.id), task.id, "claim_for_refresh")
    assert await store.task(task.id) == task


async def test_a_refresh_of_sent_tasks_only_takes_one_sent(store: Store) -> None:
    task, lease = await held(store)
    await make(store, LEASED["record_submission"][1], lease, task, NOW)
    claimed = await _sent_only(store, task.id)
    assert isinstance(claimed, TaskRow)
    assert (claimed.upstream_id, claimed.lease_owner) == (UPSTREAM_ID, WORKER)


async def test_hand_over_leaves_the_task_due_now_for_a_worker(store: Store) -> None:
    task, lease = await held(store)
    work = store.db.wakeups.subscribe(Due.WORK)
    work.clear()
    urls = ["https://upstream.example/result.png"]
    later = NOW + timedelta(seconds=5)
    result = await store.write(
        lambda tx: lifecycle.hand_over(tx, lease, results_to_copy=urls, now=later)
    )
    assert result == Applied(task.id, IN_PROGRESS)
    assert await store.task(task.id) == released(
        task, results_to_copy=urls, next_check_at=later, updated_at=later
    )
    assert work.is_set()
    assert_refused(
        await store.write(
            lambda tx: lifecycle.hand_over(tx, lease, results_to_copy=None, now=later)
        ),
        task.id,
        "hand_over",
    )

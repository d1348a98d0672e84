"""The database handle: jobs run inside a read or a write transaction on either engine.

A job is `async def job(tx) -> T`: it runs statements through `tx` and nothing else.

PostgreSQL: each job gets a connection from an asyncpg pool and runs its statements as
prepared statements (asyncpg caches them per connection), with nothing else on the
wire: no ping on checkout, no reset query on release, a write is BEGIN, its statements,
and COMMIT. SQLAlchemy's async engine (kept for migrations) costs several times that in
CPU per statement, and the API process's CPU is what bounds its throughput. A connection
that fails is dropped by the pool and the job answered with DatabaseBusy (503: retry).

SQLite: the database is a local file and its statements take microseconds, so jobs run
on the raw driver directly on the event loop; handing each statement to a thread (as an
async driver must) would cost many times the statement itself. Writes are group
committed: jobs queued while the loop is busy run in one `BEGIN IMMEDIATE` transaction,
each inside its own savepoint (so one job's failure doesn't touch the others), and their
callers are answered only after the COMMIT. The connection never waits on a lock held
by another process (busy_timeout is 0): a busy database is retried with backoff
without blocking the loop, and after `busy_wait` seconds the job fails with
DatabaseBusy. Jobs must not await anything but `tx`; the runner enforces it.

A job may `tx.announce(Due.X)`: once its transaction has committed, `Database.wakeups`
tells this process's waiters (store/wakeups.py). On PostgreSQL a NOTIFY follows, so
waiters in every other process hear of it too (`Database.listen`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from imagine.store.errors import ConstraintViolation, DatabaseBusy, ValueRefused
from imagine.store.query import Query, Row
from imagine.store.wakeups import Due, Wakeups

if TYPE_CHECKING:
    from imagine.store.postgres import Listener, PostgresRunner

__all__ = ["ConstraintViolation", "Database", "DatabaseBusy", "Job", "Tx", "ValueRefused"]

T = TypeVar("T")
logger = logging.getLogger("imagine.store")


class Tx(Protocol):
    async def one(self, query: Query, params: dict[str, Any] | None = None) -> Row | None: ...

    async def all(self, query: Query, params: dict[str, Any] | None = None) -> list[Row]: ...

    async def run(self, query: Query, params: dict[str, Any] | None = None) -> int:
        """Execute; return the number of rows it changed."""
        ...

    def announce(self, due: Due) -> None:
        """Wake whoever waits for `due` once this transaction has committed."""
        ...

    @property
    def one_statement(self) -> bool:
        """True in a PostgreSQL job run with `write(..., one_statement=True)`: there is no
        transaction around the statements, each commits on its own, so the job must make
        its write one statement (writes compose in CTEs there)."""
        ...


Job = Callable[[Tx], Coroutine[Any, Any, T]]


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, busy_wait: float = 30.0) -> None:
        self.url = make_url(url)
        self.wakeups = Wakeups()
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._sqlite: _SqliteRunner | None = None
        self._postgres: PostgresRunner | None = None
        self._listener: Listener | None = None
        if self.is_sqlite:
            # Used for migrations only; jobs run on `_SqliteRunner`.
            self.engine: AsyncEngine = create_async_engine(
                self.url, connect_args={"timeout": busy_wait}
            )
            _migrations_take_the_write_lock(self.engine)
            self._sqlite = _SqliteRunner(
                self.url.database or ":memory:", busy_wait=busy_wait, wakeups=self.wakeups
            )
        else:
            from imagine.store.postgres import PostgresRunner

            # Migrations only, rarely: no connection is kept open for them.
            self.engine = create_async_engine(self.url, poolclass=NullPool)
            self._postgres = PostgresRunner(self.dsn, pool_size=pool_size, wakeups=self.wakeups)

    @property
    def dsn(self) -> str:
        """The URL as the driver takes it (libpq form, password included)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def read(self, job: Job[T], *, snapshot: bool = True) -> T:
        """Run `job` read-only. `snapshot=False` is for jobs of a single statement, which
        sees a consistent database anyway; it saves the BEGIN and COMMIT."""
        if self._sqlite is not None:
            return await self._sqlite.read(job, snapshot=snapshot)
        assert self._postgres is not None
        return await self._postgres.read(job, snapshot=snapshot)

    async def write(self, job: Job[T], *, one_statement: bool = False) -> T:
        """Run `job` in a transaction; return its result once the transaction committed.

        `one_statement`: the job can do its write in one statement where the engine
        composes writes (see Tx.one_statement); SQLite runs it as any other job."""
        if self._sqlite is not None:
            return await self._sqlite.write(job)
        assert self._postgres is not None
        return await self._postgres.write(job, one_statement=one_statement)

    async def listen(self) -> None:
        """Hear what other processes announce (PostgreSQL; on SQLite, the processes of
        one file share no channel and poll)."""
        if self._postgres is None or self._listener is not None:
            return
        from imagine.store.postgres import Listener

        self._listener = Listener(self.dsn, self.wakeups)
        self._listener.start()

    async def listening(self) -> None:
        """Until the listener hears other processes (at once where there is none)."""
        if self._listener is not None:
            await self._listener.connected.wait()

    async def dispose(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._sqlite is not None:
            await self._sqlite.close()
        if self._postgres is not None:
            await self._postgres.close()
        await self.engine.dispose()


class _Announcing:
    """What a transaction announced, told once it has committed."""

    __slots__ = ("announced",)
    one_statement = False

    def __init__(self) -> None:
        self.announced: list[Due] = []

    def announce(self, due: Due) -> None:
        self.announced.append(due)


class _SqliteTx(_Announcing):
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def one(self, query: Query, params: dict[str, Any] | None = None) -> Row | None:
        compiled = query.sqlite()
        cursor = self._conn.execute(compiled.sql, compiled.parameters(params or {}))
        raw = cursor.fetchone()
        cursor.close()
        return None if raw is None else compiled.row(raw)

    async def all(self, query: Query, params: dict[str, Any] | None = None) -> list[Row]:
        compiled = query.sqlite()
        cursor = self._conn.execute(compiled.sql, compiled.parameters(params or {}))
        return [compiled.row(raw) for raw in cursor.fetchall()]

    async def run(self, query: Query, params: dict[str, Any] | None = None) -> int:
        compiled = query.sqlite()
        cursor = self._conn.execute(compiled.sql, compiled.parameters(params or {}))
        if compiled.columns:
            cursor.fetchall()  # RETURNING rows must be read for the statement to finish
        return cursor.rowcount


def _finish(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a job's coroutine to its end without letting it suspend.

    The connection is shared by every task on the loop: a job that yielded to the loop
    mid-transaction would let others run statements inside it.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a database job awaited something other than its transaction")


def _violation(exc: sqlite3.IntegrityError) -> ConstraintViolation:
    conflict = ConstraintViolation(str(exc))
    conflict.__cause__ = exc
    return conflict


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Pending:
    __slots__ = ("future", "job")

    def __init__(self, job: Job[Any], future: asyncio.Future[Any]) -> None:
        self.job = job
        self.future = future


class _SqliteRunner:
    def __init__(self, path: str, *, busy_wait: float, wakeups: Wakeups) -> None:
        self._path = path
        self._wakeups = wakeups
        self._busy_wait = busy_wait
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Pending] = []
        self._scheduled = False
        self._busy_since: float | None = None
        self._busy_delay = 0.001
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            for pragma in (
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "foreign_keys=ON",
                "busy_timeout=0",
            ):
                conn.execute(f"PRAGMA {pragma}")
            self._conn = conn
        return self._conn

    async def read(self, job: Job[T], *, snapshot: bool) -> T:
        started = time.monotonic()
        delay = 0.001
        while True:
            conn = self._connection()
            try:
                if not snapshot:
                    return _finish(job(_SqliteTx(conn)))
                # One snapshot for the whole job, however many statements it runs.
                conn.execute("BEGIN")
                try:
                    return _finish(job(_SqliteTx(conn)))
                finally:
                    conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if time.monotonic() - started > self._busy_wait:
                    raise DatabaseBusy("the database is locked by another process") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def write(self, job: Job[T]) -> T:
        if self._closed:
            raise DatabaseBusy("the database is closing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(job, future))
        if not self._scheduled:
            self._scheduled = True
            # call_soon, not now: requests already runnable on the loop join this batch.
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        batch, self._queue = self._queue, []
        batch = [item for item in batch if not item.future.done()]
        if not batch:
            return
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                for item in batch:
                    item.future.set_exception(exc)
                return
            self._retry_later(batch)
            return
        self._busy_since = None
        self._busy_delay = 0.001
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        announced: set[Due] = set()
        try:
            for item in batch:
                conn.execute("SAVEPOINT job")
                tx = _SqliteTx(conn)
                try:
                    result = _finish(item.job(tx))
                except Exception as exc:
                    if isinstance(exc, sqlite3.IntegrityError):
                        exc = _violation(exc)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((item, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((item, result, None))
                    announced.update(tx.announced)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            logger.error("a write batch failed to commit: %s", exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for due in announced:
            self._wakeups.notify(due)
        for item, result, error in outcomes:
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

    def _retry_later(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since > self._busy_wait:
            self._busy_since = None
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(
                        DatabaseBusy("the database is locked by another process")
                    )
            return
        self._queue[:0] = batch
        self._scheduled = True
        asyncio.get_running_loop().call_later(self._busy_delay, self._flush)
        self._busy_delay = min(self._busy_delay * 2, 0.05)

    async def close(self) -> None:
        # Writes already queued get one last attempt; whatever can't commit now fails.
        if self._queue:
            self._flush()
        self._closed = True
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(DatabaseBusy("the database is closing"))
        self._queue = []
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _migrations_take_the_write_lock(engine: AsyncEngine) -> None:
    """Processes starting together on one SQLite file migrate one after the other."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

"""PostgreSQL on the raw asyncpg driver: a pool of connections and a NOTIFY listener.

Why not SQLAlchemy's async engine: it runs every statement through a greenlet bridge and
its own result machinery, which cost several times the statement's own client CPU, and
its pool pings each connection on checkout (a round trip). Here a read of one statement
is one round trip, a write is BEGIN, its statements and COMMIT; asyncpg prepares each
statement once per connection and reuses it.

Wake-ups cross processes: once a write that announced something has committed, this
process sends `NOTIFY imagine_<due>`, and every process that listens (`Listener`) wakes
its waiters. The NOTIFY is not part of the write: in a transaction it serialises every
committing writer on PostgreSQL's notification queue lock and cost a third of a create's
database CPU (measured). It is sent apart instead, at most once per `NOTIFY_SPACING` for
all the writes of that moment, so a busy API process sends a few hundred a second at
most and a worker still hears of new work within milliseconds. A listener that loses
its connection reconnects and wakes everyone once, since it may have missed something;
polling stays the fallback in any case.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from imagine.metrics import DATABASE_CONNECTIONS_OPENED
from imagine.store.batches import Batches
from imagine.store.errors import ConstraintViolation, DatabaseBusy, ValueRefused
from imagine.store.query import Query, Row
from imagine.store.wakeups import Due, Wakeups, wakeup_channel

T = TypeVar("T")
logger = logging.getLogger("imagine.store")

_RETRIES = 3
"""Times a write is run again after PostgreSQL aborted it for a deadlock or a
serialization failure (its transaction rolled back, so running it again is safe)."""

NOTIFY_SPACING = 0.005
"""Seconds between two NOTIFY of one process; writes in between share the next one."""

_LISTENER_PING = 30.0
"""Seconds between checks that the listener's connection still answers: a connection
cut without a FIN would otherwise look alive forever."""

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
)
"""Failures of the connection, not of the statement: the database is unreachable or
restarting, and the request may be retried."""

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class PgTx:
    __slots__ = ("_batches", "_conn", "_pool", "announced", "one_statement")

    def __init__(
        self,
        conn: asyncpg.Connection | None,
        *,
        pool: asyncpg.Pool | None = None,
        batches: Batches | None = None,
    ) -> None:
        """A job's statements on `conn`; or, in a job of one statement, on a connection
        taken from `pool` only if it runs one (its batchable statement goes to
        `batches`), so that a job waiting for its batch holds no connection."""
        self._conn = conn
        self._pool = pool
        self._batches = batches
        self.announced: list[Due] = []
        self.one_statement = batches is not None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None:
            assert self._pool is not None
            self._conn = await self._pool.acquire()
        return self._conn

    def announce(self, due: Due) -> None:
        self.announced.append(due)

    async def release(self) -> None:
        if self._pool is not None and self._conn is not None:
            conn, self._conn = self._conn, None
            await self._pool.release(conn)

    async def one(self, query: Query, params: dict[str, Any] | None = None) -> Row | None:
        compiled = query.postgres()
        values = compiled.parameters(params or {})
        batching = query.batching
        # A job already holding a connection runs on it: its batch would need a second
        # one, which a pool of one can't give while this job holds the first.
        if (
            self._batches is not None
            and self._conn is None
            and batching is not None
            and params is not None
        ):
            raw = await self._batches.one(
                compiled.sql,
                values,
                key=tuple(params[name] for name in batching.key),
                order=None if batching.order is None else params.get(batching.order),
                key_columns=tuple(compiled.columns.index(name) for name in batching.key),
            )
        else:
            raw = await (await self._connection()).fetchrow(compiled.sql, *values)
        return None if raw is None else compiled.row(tuple(raw))

    async def all(self, query: Query, params: dict[str, Any] | None = None) -> list[Row]:
        compiled = query.postgres()
        conn = await self._connection()
        rows = await conn.fetch(compiled.sql, *compiled.parameters(params or {}))
        return [compiled.row(tuple(raw)) for raw in rows]

    async def run(self, query: Query, params: dict[str, Any] | None = None) -> int:
        compiled = query.postgres()
        values = compiled.parameters(params or {})
        conn = await self._connection()
        if compiled.columns:
            return len(await conn.fetch(compiled.sql, *values))
        status: str = await conn.execute(compiled.sql, *values)
        # The command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0".
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0


Job = Callable[[PgTx], Coroutine[Any, Any, T]]


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The pool's reset on release. Jobs set no session state (no SET, LISTEN, advisory
    lock or cursor outlives a job), so the default reset query would be a round trip
    per job for nothing; asyncpg still rolls back a transaction left open."""


class PostgresRunner:
    def __init__(self, dsn: str, *, pool_size: int, wakeups: Wakeups) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._wakeups = wakeups
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._to_notify: set[Due] = set()
        self._notifying: asyncio.Task[None] | None = None
        self._batches = Batches(self._connections)

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    reset=_keep_session,
                    init=self._opened,
                    statement_cache_size=1024,
                    # A connection is closed after this many idle seconds, and only then.
                    max_inactive_connection_lifetime=300.0,
                    max_queries=1_000_000,
                )
        return self._pool

    async def _opened(self, _connection: asyncpg.Connection) -> None:
        DATABASE_CONNECTIONS_OPENED.inc()

    async def read(self, job: Job[T], *, snapshot: bool) -> T:
        try:
            pool = await self._connections()
            if not snapshot:
                return await _run(job, self._statements_alone(pool))
            async with pool.acquire() as conn:
                # One snapshot for the whole job, however many statements it runs.
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    result = await job(PgTx(conn))
                except BaseException:
                    await asyncio.shield(_rollback(conn))
                    raise
                await conn.execute("COMMIT")
                return result
        except CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc
        except asyncpg.DataError as exc:
            raise ValueRefused(exc.__class__.__name__) from exc

    async def write(self, job: Job[T], *, one_statement: bool = False) -> T:
        for attempt in range(_RETRIES + 1):
            try:
                if one_statement:
                    return await self._write_alone(job)
                return await self._write_once(job)
            except _RETRYABLE:
                if attempt == _RETRIES:
                    raise
                logger.info("a write met a concurrent one (deadlock or serialization); rerun")
            except CONNECTION_ERRORS as exc:
                raise _unavailable(exc) from exc
            except asyncpg.DataError as exc:
                raise ValueRefused(exc.__class__.__name__) from exc
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise ConstraintViolation(str(exc)) from exc
        raise AssertionError("unreachable")

    async def _write_alone(self, job: Job[T]) -> T:
        """A job whose write is one statement: that statement is its own transaction,
        shared with the runs of it that arrive at the same moment when it is batchable
        (store/batches.py; see Tx.one_statement)."""
        tx = self._statements_alone(await self._connections())
        result = await _run(job, tx)
        self._announce(set(tx.announced))
        return result

    def _statements_alone(self, pool: asyncpg.Pool) -> PgTx:
        """A job whose statements each stand alone: a batchable one shares the round trip
        of its batch, the others take a connection only when they run."""
        return PgTx(None, pool=pool, batches=self._batches)

    async def _write_once(self, job: Job[T]) -> T:
        pool = await self._connections()
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            tx = PgTx(conn)
            try:
                result = await job(tx)
            except BaseException:
                await asyncio.shield(_rollback(conn))
                raise
            await conn.execute("COMMIT")
        self._announce(set(tx.announced))
        return result

    def _announce(self, announced: set[Due]) -> None:
        if not announced:
            return
        for due in announced:
            self._wakeups.notify(due)
        self._to_notify |= announced
        if self._notifying is None or self._notifying.done():
            self._notifying = asyncio.create_task(self._notify(), name="imagine-notify")

    async def _notify(self) -> None:
        while self._to_notify:
            dues, self._to_notify = self._to_notify, set()
            statement = "".join(f"NOTIFY {wakeup_channel(due)};" for due in sorted(dues))
            try:
                pool = await self._connections()
                async with pool.acquire() as conn:
                    await conn.execute(statement)
            except Exception as exc:
                # The other processes find the work on their next poll.
                logger.debug("NOTIFY failed (%s)", exc.__class__.__name__)
            await asyncio.sleep(NOTIFY_SPACING)

    async def close(self) -> None:
        await self._batches.close()
        if self._notifying is not None:
            await asyncio.gather(self._notifying, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _run(job: Job[T], tx: PgTx) -> T:
    try:
        return await job(tx)
    finally:
        await tx.release()


async def _rollback(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        # A connection that can't even roll back is of no further use.
        conn.terminate()


def _unavailable(exc: BaseException) -> DatabaseBusy:
    return DatabaseBusy(f"PostgreSQL is unavailable ({exc.__class__.__name__})")


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


class Listener:
    """Hears NOTIFY on the wake-up channels and tells this process's waiters."""

    def __init__(self, dsn: str, wakeups: Wakeups) -> None:
        self._dsn = dsn
        self._wakeups = wakeups
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="imagine-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _heard(self, _conn: object, _pid: int, name: str, _payload: str) -> None:
        for due in Due:
            if wakeup_channel(due) == name:
                self._wakeups.notify(due)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                for due in Due:
                    await conn.add_listener(wakeup_channel(due), self._heard)
                self.connected.set()
                # Anything announced while no one listened is found by looking now.
                for due in Due:
                    self._wakeups.notify(due)
                delay = 0.5
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), _LISTENER_PING)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), _LISTENER_PING)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "wake-up listener lost PostgreSQL (%s); polling meanwhile, retrying in %.1f s",
                    exc.__class__.__name__,
                    delay,
                )
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

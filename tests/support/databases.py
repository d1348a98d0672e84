"""The two database engines the server runs on, for tests that must hold on both."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Callable, Collection, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

ADMIN_URL = os.environ.get("IMAGINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ENGINE = os.environ.get("IMAGINE_TEST_ENGINE", "sqlite")
"""The engine test servers run on unless a test picks one: `sqlite` (the embedded
default) or `postgres` (`make test-postgres`: the API suite again, on PostgreSQL)."""

T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread whose loop is running (Playwright's sync API runs
    one in the test's thread): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, work).result()


if ENGINE not in ("sqlite", "postgres"):
    raise SystemExit(f"IMAGINE_TEST_ENGINE={ENGINE!r}: use sqlite or postgres")

_for_data_dir: dict[Path, str] = {}
_templates: list[str] = []


def _migrated_template() -> str:
    """A database with this version's schema and no rows, copied for each test server:
    a copy takes a fraction of the time the migrations take."""
    if not _templates:
        from imagine.store.db import Database
        from imagine.store.migrate import upgrade

        url = create_postgres_database()

        async def migrate() -> None:
            db = Database(sqlalchemy_url(url))
            try:
                await upgrade(db)
            finally:
                await db.dispose()

        _run(migrate())
        _templates.append(url)
    return _templates[0]


def database_of(data_dir: Path) -> str | None:
    """On the PostgreSQL pass, the database of a test server's data dir (one per data
    dir, so a server restarted on it finds its tasks); None on SQLite."""
    if ENGINE != "postgres":
        return None
    key = data_dir.resolve()
    if key not in _for_data_dir:
        _for_data_dir[key] = create_postgres_database(template=_migrated_template())
    return _for_data_dir[key]


def drop_server_databases() -> None:
    while _for_data_dir:
        _, url = _for_data_dir.popitem()
        drop_postgres_database(url)
    while _templates:
        drop_postgres_database(_templates.pop())


def _base() -> str:
    return ADMIN_URL.rsplit("/", 1)[0]


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_postgres_database(template: str | None = None) -> str:
    """A new, empty database on the machine's PostgreSQL; returns its asyncpg URL.

    With `template` (the URL of a database nobody is connected to), a copy of that one."""
    name = "imagine_test_" + secrets.token_hex(6)
    copy = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
    try:
        _run(_admin(f'CREATE DATABASE "{name}"{copy}'))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}")
    return f"{_base()}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def query(database: str | Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the server's database directly, to check invariants from outside."""
    if isinstance(database, Path):
        # sqlite3's own `with` commits but doesn't close (an error on Python 3.13).
        with closing(sqlite3.connect(database)) as conn, conn:
            return list(conn.execute(sql))

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(database)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return _run(run())


Fetch = Callable[[str], list[tuple[Any, ...]]]
"""Runs one SELECT and gives back its rows."""


def ledger_problems(database: str | Path, *, kept: Collection[str] = ()) -> list[str]:
    """Every broken money invariant: balance = sum of ledger, one debit per task, one refund
    per failed task and none for the others, consumed credits consistent.

    `kept`: tasks cancelled after a paid provider started them; they end FAILED with their
    credits kept, so they must have no refund."""
    return ledger_problems_in(lambda sql: query(database, sql), kept=kept)


def ledger_problems_in(fetch: Fetch, *, kept: Collection[str] = ()) -> list[str]:
    """`ledger_problems` through a connection the caller already holds."""
    problems = []
    for account_id, balance, total in fetch(
        "SELECT a.id, a.balance, COALESCE(SUM(l.amount), 0) FROM accounts a "
        "LEFT JOIN ledger l ON l.account_id = a.id GROUP BY a.id, a.balance",
    ):
        if balance != total or balance < 0:
            problems.append(f"account {account_id}: balance {balance}, ledger sum {total}")
    for task_id, status, credits, refunded, debits, refunds in fetch(
        "SELECT t.id, t.status, t.credits, t.refunded, "
        "(SELECT COUNT(*) FROM ledger l WHERE l.task_id = t.id AND l.kind = 'debit'), "
        "(SELECT COUNT(*) FROM ledger l WHERE l.task_id = t.id AND l.kind = 'refund') "
        "FROM tasks t",
    ):
        keeps = task_id in kept
        expected_refunds = 1 if status == "FAILED" and not keeps else 0
        if (
            debits != 1
            or refunds != expected_refunds
            or bool(refunded) != (expected_refunds == 1)
            or (keeps and status != "FAILED")
        ):
            problems.append(
                f"task {task_id} ({status}, {credits} credits): {debits} debits, {refunds} refunds"
            )
    return problems

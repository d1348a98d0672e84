"""Migrations that move data, on both engines: a database written by an earlier version
keeps every task in flight after `upgrade` (the worker's bookkeeping moves out of the
provider's state into its own columns; JSON 'null' becomes SQL NULL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from imagine.store.migrate import alembic_config
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    sqlalchemy_url,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)

# The tables as revision 0005 had them (plain JSON: None was stored as JSON 'null' on
# PostgreSQL, as earlier versions did).
_meta = sa.MetaData()
_accounts = sa.Table(
    "accounts",
    _meta,
    sa.Column("id", sa.String),
    sa.Column("name", sa.String),
    sa.Column("balance", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
_keys = sa.Table(
    "api_keys",
    _meta,
    sa.Column("id", sa.String),
    sa.Column("account_id", sa.String),
    sa.Column("name", sa.String),
    sa.Column("key_hash", sa.String),
    sa.Column("prefix", sa.String),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)
_TASK_COLUMNS: dict[str, Any] = {
    "id": sa.String,
    "account_id": sa.String,
    "api_key_id": sa.String,
    "model": sa.String,
    "status": sa.String,
    "request": sa.JSON,
    "public": sa.Boolean,
    "credits": sa.Integer,
    "refunded": sa.Boolean,
    "provider": sa.String,
    "provider_state": sa.JSON,
    "upstream_callback": sa.JSON,
    "attempts": sa.Integer,
    "next_check_at": sa.DateTime(timezone=True),
    "deadline_at": sa.DateTime(timezone=True),
    "created_at": sa.DateTime(timezone=True),
    "updated_at": sa.DateTime(timezone=True),
}
_tasks = sa.Table(
    "tasks", _meta, *(sa.Column(name, type_) for name, type_ in _TASK_COLUMNS.items())
)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'imagine.db'}"
        return
    url = create_postgres_database()
    try:
        yield sqlalchemy_url(url)
    finally:
        drop_postgres_database(url)


def _migrate(url: str, revision: str, rows: list[tuple[sa.Table, dict[str, Any]]]) -> None:
    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:

                def upgrade(connection: sa.Connection) -> None:
                    config = alembic_config()
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)
                    for table, values in rows:
                        connection.execute(sa.insert(table).values(values))

                await conn.run_sync(upgrade)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _select(url: str, sql: str) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return [tuple(row) for row in await conn.execute(sa.text(sql))]
        finally:
            await engine.dispose()

    return asyncio.run(run())


_OWNER: list[tuple[sa.Table, dict[str, Any]]] = [
    (_accounts, {"id": "acc_1", "name": "a", "balance": 0, "created_at": NOW, "updated_at": NOW}),
    (
        _keys,
        {
            "id": "key_1",
            "account_id": "acc_1",
            "name": "k",
            "key_hash": "h" * 64,
            "prefix": "imk_x",
            "created_at": NOW,
        },
    ),
]
"""The account and key every task below belongs to."""


def _task(task_id: str, *, status: str = "IN_PROGRESS", **values: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "account_id": "acc_1",
        "api_key_id": "key_1",
        "model": "grok-imagine/text-to-video",
        "status": status,
        "request": {"model": "grok-imagine/text-to-video", "input": {"prompt": "a cat"}},
        "public": False,
        "credits": 30,
        "refunded": False,
        "provider": "kie",
        "attempts": 2,
        "next_check_at": NOW,
        "deadline_at": NOW + timedelta(minutes=30),
        "created_at": NOW,
        "updated_at": NOW,
        "upstream_callback": None,
        **values,
    }


def test_upgrading_moves_the_workers_bookkeeping_out_of_the_provider_state(
    database_url: str,
) -> None:
    rows = [
        *_OWNER,
        (_tasks, _task("t1", provider_state={"_tried": {"xai": 0, "kie": 2}})),
        (
            _tasks,
            _task(
                "t2",
                provider_state={"_mirroring": ["https://cdn.example/a.mp4"], "poll": 3},
            ),
        ),
        (_tasks, _task("t3", provider_state={"poll": 1})),
        # A finished task keeps what it had: nothing will read its bookkeeping again.
        (_tasks, _task("t4", status="SUCCESS", provider_state={"_tried": {"kie": 0}})),
    ]
    _migrate(database_url, "0005", rows)
    _migrate(database_url, "head", [])

    found = _select(
        database_url,
        "SELECT id, provider_state, routes_tried, results_to_copy FROM tasks ORDER BY id",
    )
    decoded = [(task_id, *(_json(value) for value in values)) for task_id, *values in found]
    assert decoded == [
        ("t1", None, {"xai": 0, "kie": 2}, None),
        ("t2", {"poll": 3}, None, ["https://cdn.example/a.mp4"]),
        ("t3", {"poll": 1}, None, None),
        ("t4", {"_tried": {"kie": 0}}, None, None),
    ]
    # What is not set is SQL NULL, not the JSON text 'null'.
    unset = _select(
        database_url,
        "SELECT id, provider_state IS NULL, routes_tried IS NULL, results_to_copy IS NULL "
        "FROM tasks ORDER BY id",
    )
    assert [tuple(bool(flag) for flag in flags) for _, *flags in unset] == [
        (True, False, True),
        (False, True, False),
        (False, True, True),
        (False, True, True),
    ]


def test_upgrading_turns_json_null_into_sql_null(database_url: str) -> None:
    rows = [
        *_OWNER,
        (_tasks, _task("t1", upstream_callback=None, provider_state=None)),
        (_tasks, _task("t2", upstream_callback={"code": 200}, provider_state={"poll": 1})),
    ]
    _migrate(database_url, "0005", rows)
    _migrate(database_url, "head", [])
    found = _select(
        database_url,
        "SELECT id, upstream_callback IS NULL, provider_state IS NULL FROM tasks ORDER BY id",
    )
    assert [(task_id, bool(a), bool(b)) for task_id, a, b in found] == [
        ("t1", True, True),
        ("t2", False, False),
    ]


def _json(value: Any) -> Any:
    """A JSON column as both engines give it back to a plain text query."""
    return json.loads(value) if isinstance(value, str) else value

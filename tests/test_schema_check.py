"""`serve` and `worker` start on an empty database (creating its schema) or a current
one, and refuse, with one line saying what to run, a schema at another revision; only
`imagine db upgrade` migrates. On both engines."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from imagine.store.migrate import alembic_config, head_revision
from tests.support import databases
from tests.support.server import ServerProcess, free_port


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A database URL, and the environment that points imagine at it."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'imagine.db'}"
        (tmp_path / "data").mkdir()
        yield url, {}
        return
    created = databases.create_postgres_database()
    url = databases.sqlalchemy_url(created)
    try:
        yield url, {"IMAGINE_DATABASE_URL": url}
    finally:
        databases.drop_postgres_database(created)


def _migrate_to(url: str, revision: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:

                def upgrade(connection: sa.Connection) -> None:
                    config = alembic_config()
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)

                await conn.run_sync(upgrade)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _imagine(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagine", *args, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=120,
    )


def test_an_older_schema_is_refused_until_db_upgrade(
    tmp_path: Path, database: tuple[str, dict[str, str]]
) -> None:
    url, env = database
    _migrate_to(url, "0005")
    wanted = (
        f"error: the database schema is at revision 0005, this version needs "
        f"{head_revision()}: run `imagine db upgrade` (back up first)"
    )
    for command_line in (["serve", "--port", str(free_port())], ["worker"]):
        done = _imagine(tmp_path, env, *command_line)
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.strip() == wanted
        assert "Traceback" not in done.stdout + done.stderr
    # Nothing was migrated behind the operator's back.
    assert _imagine(tmp_path, env, "worker").stderr.strip() == wanted

    upgraded = _imagine(tmp_path, env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with ServerProcess(tmp_path / "data", env) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_a_newer_schema_is_refused(tmp_path: Path, database: tuple[str, dict[str, str]]) -> None:
    url, env = database
    _migrate_to(url, "head")
    target = url.removeprefix("sqlite+aiosqlite:///") if url.startswith("sqlite") else None
    statement = "UPDATE alembic_version SET version_num = '9999'"
    if target is not None:
        databases.query(Path(target), statement)
    else:
        databases.query(url.replace("postgresql+asyncpg://", "postgresql://"), statement)
    done = _imagine(tmp_path, env, "worker")
    assert done.returncode == 1
    assert done.stderr.strip().startswith(
        "error: the database schema is at revision 9999, newer than this version knows"
    )
    assert "Traceback" not in done.stderr


def test_an_empty_database_gets_its_schema_on_the_first_start(
    tmp_path: Path, database: tuple[str, dict[str, str]]
) -> None:
    _, env = database
    with ServerProcess(tmp_path / "data", env) as server:
        assert httpx.get(f"{server.url}/readyz").json()["data"] == {"status": "ready"}

"""The schema's revision in the one Alembic chain: bring it to the newest (`imagine db
upgrade`), or check that it is the newest (every other start)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import urllib.parse
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text

from imagine.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every process of a fleet.
_PG_MIGRATION_LOCK = 7_242_024


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(db: Database) -> None:
    async with db.engine.begin() as conn:
        if not db.is_sqlite:
            # Many processes may start at once; one migrates, the rest wait and find it done.
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
        await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


class SchemaMismatch(Exception):
    """The database's schema is not the one this version runs on; the message (one line)
    says what to run."""


def _check_or_initialise(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    head = head_revision()
    current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return
    if current is None:
        tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
        if not tables:
            # A fresh data dir or an empty database: the first start creates the schema.
            command.upgrade(cfg, "head")
            return
        raise SchemaMismatch(
            "the database has tables but no imagine schema revision; point "
            "IMAGINE_DATABASE_URL at an empty database or at imagine's own"
        )
    raise SchemaMismatch(mismatch(current, head))


def mismatch(current: str | None, head: str | None) -> str:
    """What is wrong with a schema at `current` for this version (which needs `head`)."""
    if current is None:
        return "the database has no schema yet: run `imagine db upgrade` (or start `serve`)"
    script = ScriptDirectory(str(MIGRATIONS))
    try:
        known = current is not None and script.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        return (
            f"the database schema is at revision {current}, newer than this version "
            f"knows (it needs {head}): run the newer imagine, or restore a backup"
        )
    return (
        f"the database schema is at revision {current}, this version needs {head}: "
        "run `imagine db upgrade` (back up first)"
    )


async def prepare(db: Database) -> None:
    """What `serve` and `worker` do on start: create the schema of an empty database,
    accept a current one, and refuse (SchemaMismatch) one that is behind or ahead:
    upgrading is the operator's call, taken with `imagine db upgrade` after a backup."""
    async with db.engine.begin() as conn:
        if not db.is_sqlite:
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
        await conn.run_sync(_check_or_initialise)


@functools.cache
def head_revision() -> str | None:
    """The revision this version runs on (read once: it loads every migration file)."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


async def current_revision(db: Database) -> str | None:
    """The database's revision, None when it has no schema; raises when it can't be read.

    On its own connection each time: on SQLite a new one to the file (a pooled one would
    go on reading a file that was removed or made unreadable meanwhile)."""
    if db.is_sqlite:
        return await asyncio.to_thread(_sqlite_revision, db.url.database or "")
    async with db.engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return None
        found = await conn.execute(text("SELECT version_num FROM alembic_version"))
        return found.scalar()


def _sqlite_revision(path: str) -> str | None:
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=2)) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
    return None if row is None else str(row[0])

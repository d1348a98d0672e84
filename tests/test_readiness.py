"""GET /readyz of `imagine serve`, on both engines: 200 while the database answers with
this version's schema; 503, saying what is wrong, when its schema is at another revision
or the database is gone. /healthz answers all along: it looks at nothing."""

from __future__ import annotations

from pathlib import Path

import httpx

from imagine.store.migrate import head_revision
from tests.support import databases
from tests.support.server import ServerProcess


def _readyz(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=30)


def _set_revision(database: str | Path, revision: str) -> None:
    databases.query(database, f"UPDATE alembic_version SET version_num = '{revision}'")


def test_ready_only_while_the_database_answers_with_this_schema(
    engine_server: tuple[ServerProcess, str | Path],
) -> None:
    server, database = engine_server
    ready = _readyz(server)
    assert ready.status_code == 200
    assert ready.json() == {"code": 200, "message": "success", "data": {"status": "ready"}}

    _set_revision(database, "0005")
    behind = _readyz(server)
    assert behind.status_code == 503
    assert behind.json() == {
        "code": 503,
        "message": f"the database schema is at revision 0005, this version needs "
        f"{head_revision()}: run `imagine db upgrade` (back up first)",
        "data": None,
    }
    _set_revision(database, "9999")
    ahead = _readyz(server).json()
    assert ahead["code"] == 503
    assert "revision 9999, newer than this version knows" in ahead["message"]
    _set_revision(database, str(head_revision()))
    assert _readyz(server).status_code == 200

    if isinstance(database, Path):
        database.rename(database.with_name("moved.db"))
    else:
        databases.drop_postgres_database(database)
    gone = _readyz(server)
    assert gone.status_code == 503
    assert gone.json()["data"] is None
    assert gone.json()["message"].startswith("the database can't be reached or read (")
    assert httpx.get(f"{server.url}/healthz").status_code == 200

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import databases
from tests.support.api import new_key
from tests.support.server import ServerProcess

# A developer's own .env (config.ENV_FILE) must not reach the servers and commands the
# tests start; tests/test_settings_file.py sets it where it is the subject.
os.environ["IMAGINE_ENV_FILE"] = os.devnull


def pytest_sessionfinish(session: pytest.Session) -> None:
    databases.drop_server_databases()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if databases.ENGINE != "postgres":
        return
    skip = pytest.mark.skip(reason="about the SQLite file itself (IMAGINE_TEST_ENGINE=postgres)")
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server on the embedded default; tests isolate by using their own keys."""
    with ServerProcess(tmp_path_factory.mktemp("shared")) as running:
        yield running


@pytest.fixture
def key(server: ServerProcess) -> str:
    """A fresh account with 1000 credits."""
    created: str = new_key(server.url)["key"]
    return created


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with particular settings; all are stopped after the test."""
    started: list[ServerProcess] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None) -> ServerProcess:
        running = ServerProcess(data_dir or tmp_path / f"data{len(started)}", env).start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def engine_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ServerProcess, str | Path]]:
    """A server on each database engine, with the handle tests use to read it directly."""
    data_dir = tmp_path / "engine"
    database: str | Path = data_dir / "imagine.db"
    env = {"IMAGINE_DATABASE_URL": f"sqlite+aiosqlite:///{(data_dir / 'imagine.db').resolve()}"}
    if request.param == "postgres":
        url = databases.create_postgres_database()
        env["IMAGINE_DATABASE_URL"] = databases.sqlalchemy_url(url)
        database = url
    running = ServerProcess(data_dir, env).start()
    try:
        yield running, database
    finally:
        running.stop()
        if request.param == "postgres":
            databases.drop_postgres_database(str(database))

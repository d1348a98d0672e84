"""API keys are stored only as hashes: after keys are made every way there is (the first
start, the admin API, the CLI) and used every way there is, no key, nor any 16 characters
of one, is anywhere in the database: on SQLite, in the raw bytes of the database file and
its -wal and -shm files (and every other file of the data dir); on PostgreSQL, in any
column of any row of any table."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import databases
from tests.support.api import auth, http, new_key, text_to_image, wait_done
from tests.support.server import ADMIN_TOKEN, ServerProcess

_PRINTED_KEY = re.compile(r"^\s+(im_[A-Za-z0-9_-]+)\s*$", re.MULTILINE)
WINDOW = 16
"""Characters of a key that would already be too many to find stored (96 random bits)."""


def _cli(server: ServerProcess, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "imagine", *args, "--json", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env={**server.env, "COLUMNS": "200"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _admin(server: ServerProcess, method: str, path: str, body: Any = None) -> Any:
    answer = http.request(
        method, f"{server.url}{path}", json=body, headers=auth(ADMIN_TOKEN), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _use(server: ServerProcess, key: str, label: str) -> str:
    """Everything a client does with a key; returns a task it made."""
    url = server.url
    headers = {**auth(key), "Idempotency-Key": f"at-rest-{label}"}
    body = {
        **text_to_image(f"at rest {label}"),
        "callback_url": f"https://hooks.example.invalid/{label}?token=hook-{label}",
    }
    for _ in range(2):  # the second is an idempotent replay
        answer = http.post(f"{url}/api/generate", json=body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["data"]["task_id"]
    assert http.post(f"{url}/api/status", json={"task_id": task_id}, headers=auth(key)).is_success
    assert http.get(f"{url}/api/credits", headers=auth(key)).is_success
    assert http.get(f"{url}/api/webhook-secret", headers=auth(key)).is_success
    assert http.post(f"{url}/api/webhook-secret/rotate", headers=auth(key)).is_success
    assert http.get(f"{url}/api/tasks", headers=auth(key)).is_success
    assert http.get(f"{url}/api/webhooks", headers=auth(key)).is_success
    running = http.post(f"{url}/api/generate", json=text_to_image("cancel me"), headers=auth(key))
    cancel = http.post(
        f"{url}/api/cancel", json={"task_id": running.json()["data"]["task_id"]}, headers=auth(key)
    )
    assert cancel.status_code in (200, 409), cancel.text  # 409: it finished first
    return task_id


def _found(haystack: bytes, key: str) -> list[str]:
    raw = key.encode()
    return [
        raw[start : start + WINDOW].decode()
        for start in range(len(raw) - WINDOW + 1)
        if raw[start : start + WINDOW] in haystack
    ]


def _sqlite_bytes(data_dir: Path) -> bytes:
    """The database, its -wal and -shm files, and every other file of the data dir but
    the server's own log (where the first start prints its key, once, by design)."""
    files = sorted(path for path in data_dir.rglob("*") if path.is_file())
    names = {path.name for path in files}
    assert "imagine.db" in names, names
    return b"".join(path.read_bytes() for path in files if not path.name.endswith(".log"))


def _postgres_text(database: str) -> bytes:
    """Every row of every table, each row as PostgreSQL writes it as text (all columns)."""
    tables = databases.query(
        database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert tables
    rows = []
    for (table,) in tables:
        rows += databases.query(database, f'SELECT CAST(t AS text) FROM "{table}" AS t')
    return "\n".join(str(row[0]) for row in rows).encode()


def test_no_api_key_is_stored_anywhere(engine_server: tuple[ServerProcess, str | Path]) -> None:
    server, database = engine_server
    printed = _PRINTED_KEY.search(server.log())
    assert printed is not None, server.log()
    first = printed.group(1)
    by_admin = new_key(server.url, name="admin-made")
    same_account = _admin(
        server, "POST", "/admin/keys", {"name": "second", "account_id": by_admin["account_id"]}
    )
    by_cli = _cli(server, "keys", "create", "--name", "cli-made", "--credits", "100")
    keys = [first, by_admin["key"], same_account["key"], by_cli["key"]]
    assert all(key.startswith("im_") for key in keys)

    tasks = [(key, _use(server, key, str(index))) for index, key in enumerate(keys)]
    # The operator's tools take a key where they take an account or a key id.
    _admin(server, "POST", "/admin/credits/grant", {"account": by_admin["key"], "amount": 7})
    _admin(server, "GET", f"/admin/credits/{by_admin['key']}")
    _admin(server, "GET", "/admin/keys")
    for key, task_id in tasks:
        wait_done(server.url, key, task_id)
    _admin(server, "POST", f"/admin/keys/{same_account['key']}/revoke")
    for revoked in (same_account["key"],):
        assert http.get(f"{server.url}/api/credits", headers=auth(revoked)).status_code == 401

    def stored() -> bytes:
        if isinstance(database, Path):
            return _sqlite_bytes(database.parent)
        return _postgres_text(database)

    running = stored()  # while the server runs: recent writes are in the -wal file
    server.stop()
    stopped = stored()
    for key in keys:
        # The scan does see the keys' rows: their hashes are there.
        assert hashlib.sha256(key.encode()).hexdigest().encode() in running + stopped
        assert _found(running, key) == [], f"part of a key is stored: {key}"
        assert _found(stopped, key) == [], f"part of a key is stored: {key}"

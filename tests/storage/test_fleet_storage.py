"""A fleet: an API process and a worker process with different data dirs, one PostgreSQL
database, one bucket. The URL the API answers with serves the file the worker made."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.support import databases
from tests.support.api import create_task, new_key, wait_done
from tests.support.s3 import MotoServer
from tests.support.server import ServerProcess
from tests.support.worker import WorkerProcess


@pytest.fixture
def fleet(
    tmp_path: Path, moto: MotoServer, bucket: str
) -> Iterator[tuple[ServerProcess, WorkerProcess]]:
    url = databases.create_postgres_database()
    shared = {**moto.env(bucket), "IMAGINE_DATABASE_URL": databases.sqlalchemy_url(url)}
    api = ServerProcess(tmp_path / "api", shared)
    api.no_worker = True
    try:
        with api:
            worker_env = {**shared, "IMAGINE_PUBLIC_URL": api.url, "IMAGINE_PREVIEW_DELAY": "0.2"}
            with WorkerProcess(tmp_path / "worker", worker_env) as worker:
                yield api, worker
    finally:
        databases.drop_postgres_database(url)


def _finished_by_worker(worker: WorkerProcess, task_id: str) -> None:
    """Wait for the worker process to end the task (no status call meanwhile, so the API
    process never refreshes it itself)."""
    deadline = time.monotonic() + 180
    while f"task {task_id}: SUCCESS" not in worker.log():
        assert worker.process is not None
        assert worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)


def test_the_api_serves_what_a_worker_elsewhere_stored(
    fleet: tuple[ServerProcess, WorkerProcess], moto: MotoServer, bucket: str
) -> None:
    api, worker = fleet
    key = new_key(api.url)["key"]
    task_id = create_task(api.url, key, {"input": {"prompt": "two machines, one bucket"}})
    _finished_by_worker(worker, task_id)
    data = wait_done(api.url, key, task_id)
    [url] = data["response"]["resultUrls"]
    assert url == f"{api.url}/files/{task_id}/0.png"
    served = httpx.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.content == moto.object(bucket, f"results/{task_id}/0.png")[0]
    # Neither process kept a local copy: the bucket is the only place the file lives.
    for data_dir in (api.data_dir, worker.data_dir):
        assert not list(data_dir.rglob("*.png"))

    # An upscale, run by the worker, reads its source from the bucket.
    upscale = create_task(
        api.url, key, {"model": "grok-imagine/upscale", "input": {"task_id": task_id}}
    )
    _finished_by_worker(worker, upscale)
    bigger = wait_done(api.url, key, upscale)
    assert bigger["status"] == "SUCCESS", bigger
    path = urlsplit(bigger["response"]["resultUrls"][0]).path
    assert path == f"/files/{upscale}/0.png"
    original = Image.open(io.BytesIO(served.content))
    upscaled = Image.open(io.BytesIO(httpx.get(api.url + path).content))
    assert upscaled.size == (original.width * 2, original.height * 2)

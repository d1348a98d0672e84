"""The blocking client against a real server: every operation, over real HTTP."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import httpx
import pytest

import imagine.client
from imagine.client import Client, Task
from tests.support.api import balance, new_key
from tests.support.server import ServerProcess


def test_generate_answers_at_once_and_wait_follows_it(client: Client, key: str) -> None:
    created = client.generate("a lighthouse at dawn", options={"aspect_ratio": "16:9"})
    assert created.status == "IN_PROGRESS"
    assert created.task_id.startswith("t")
    assert created.model == "grok-imagine/text-to-image"
    seen: list[Task] = []
    done = created.wait(timeout=60, on_update=seen.append)
    assert done.succeeded
    assert done.done
    assert seen[-1] == done
    assert all(one != two for one, two in itertools.pairwise(seen))
    assert done.request["input"] == {"prompt": "a lighthouse at dawn", "aspect_ratio": "16:9"}
    assert done.consumed_credits == 5
    assert isinstance(done.created_at, datetime)
    assert done.created_at.tzinfo is not None
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    assert done.progress is None
    assert len(done.result_urls) == 1
    assert done.error_message is None


def test_generate_with_wait_returns_the_finished_task(client: Client) -> None:
    task = client.generate("a red fox in snow", wait=True, timeout=60)
    assert task.status == "SUCCESS"
    assert task.result_urls
    assert task.consumed_credits == 5


def test_run_and_status(client: Client) -> None:
    task = client.run("waves at dusk", model="text-to-video", options={"duration": "6"})
    assert task.succeeded
    assert task.model == "grok-imagine/text-to-video"
    assert task.result_urls[0].endswith(".mp4")
    again = client.status(task.task_id)
    assert again == task
    assert again.refresh() == task


def test_the_chained_models(client: Client) -> None:
    image = client.run("a cat")
    upscaled = client.run(model="upscale", task_id=image.task_id)
    assert upscaled.succeeded
    assert upscaled.request["input"] == {"task_id": image.task_id}


def test_download_saves_the_served_bytes(client: Client, tmp_path: Path) -> None:
    task = client.run("a lighthouse")
    paths = task.download(tmp_path / "out")
    assert paths == [tmp_path / "out" / f"{task.task_id}-0.png"]
    served = httpx.get(task.result_urls[0]).content
    assert paths[0].read_bytes() == served
    assert served.startswith(b"\x89PNG")
    assert [path.name for path in (tmp_path / "out").iterdir()] == [paths[0].name]
    assert client.download(task.task_id, tmp_path / "again")[0].read_bytes() == served


def test_tasks_follows_the_cursor_over_pages(server: ServerProcess, key: str) -> None:
    pages: list[httpx.URL] = []

    def record(request: httpx.Request) -> None:
        if request.url.path == "/api/tasks":
            pages.append(request.url)

    http = httpx.Client(event_hooks={"request": [record]})
    with Client(api_key=key, base_url=server.url, http_client=http) as client:
        made = [client.generate(f"picture {n}").task_id for n in range(5)]
        listed = list(client.tasks(page_size=2))
        assert [task.task_id for task in listed] == made[::-1]
        assert len(pages) == 3
        assert [url.params.get("cursor") is None for url in pages] == [True, False, False]
        assert [task.task_id for task in client.tasks(page_size=2, limit=3)] == made[:1:-1]
        assert [url.params["limit"] for url in pages[3:]] == ["2", "1"]
        for task in made:
            client.wait(task, timeout=60)
        images = client.tasks(status="SUCCESS", model="text-to-image")
        assert [task.task_id for task in images] == made[::-1]
        assert list(client.tasks(status="FAILED")) == []
    http.close()


def test_balance_account_and_models(server: ServerProcess) -> None:
    created = new_key(server.url, credits=42)
    with Client(api_key=created["key"], base_url=server.url) as client:
        assert client.balance() == 42
        account = client.account()
        assert account.account_id == created["account_id"]
        assert account.balance == 42
        models = {model.name: model for model in client.models()}
    assert set(models) == {
        "grok-imagine/text-to-image",
        "grok-imagine/text-to-video",
        "grok-imagine/image-to-video",
        "grok-imagine/upscale",
    }
    image = models["grok-imagine/text-to-image"]
    assert image.credits == 5
    assert image.output == "image"
    assert image.engine == "preview"
    assert image.available
    assert "1:1" in image.options["aspect_ratio"]
    assert models["grok-imagine/text-to-video"].credits == 24


def test_cancel_ends_the_task_and_refunds_it(slow_server: ServerProcess) -> None:
    key = new_key(slow_server.url, credits=100)["key"]
    with Client(api_key=key, base_url=slow_server.url) as client:
        task = client.generate("never mind")
        assert client.balance() == 95
        cancelled = task.cancel()
        assert cancelled.task_id == task.task_id
        assert cancelled.failed
        assert cancelled.error_message == "cancelled by its owner"
        assert cancelled.consumed_credits == 0
        assert client.balance() == 100


def test_an_idempotency_key_gives_back_the_first_task(
    client: Client, server: ServerProcess, key: str
) -> None:
    first = client.generate("once", idempotency_key="order-17")
    second = client.generate("once", idempotency_key="order-17")
    assert second.task_id == first.task_id
    assert balance(server.url, key) == 995


def test_module_level_run_uses_the_environment(
    server: ServerProcess, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_API_KEY", key)
    monkeypatch.setenv("IMAGINE_BASE_URL", server.url)
    monkeypatch.setattr(imagine.client, "_default", None)
    task = imagine.client.run("from the module")
    assert task.succeeded
    assert imagine.client.default_client() is task.client
    assert task.client.base_url == server.url
    task.client.close()

"""The kie provider against the fake kie.ai, over real sockets: every model end to end,
chaining by kie task id, results mirrored into our storage, callbacks instead of polls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import orjson
import pytest

from imagine.providers.media import sniff_content_type
from tests.support.api import (
    auth,
    balance,
    cancel,
    create_task,
    generate,
    new_key,
    wait_done,
    wait_for_progress,
)
from tests.support.fake_kie import FakeKie
from tests.support.server import ServerProcess
from tests.support.upstreams import kie_env, start_server

T = TypeVar("T")
T2I = "grok-imagine/text-to-image"
T2V = "grok-imagine/text-to-video"
I2V = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"


@pytest.fixture(scope="module")
def kie() -> Iterator[FakeKie]:
    with FakeKie(task_seconds=0.3, webhook_key="kie-hmac-secret", images_per_task=2) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(kie: FakeKie, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = kie_env(kie, IMAGINE_PROVIDER="kie")
    running = start_server(tmp_path_factory.mktemp("kie"), env)
    yield running
    running.stop()


@pytest.fixture
def key(server: ServerProcess) -> str:
    created: str = new_key(server.url)["key"]
    return created


def _mirrored(server: ServerProcess, urls: list[str], kind: str) -> None:
    assert urls
    for url in urls:
        assert url.startswith(f"{server.url}/files/"), url
        answer = httpx.get(url)
        assert answer.status_code == 200
        assert (sniff_content_type(answer.content) or "").startswith(kind)
        assert answer.headers["content-type"].startswith(kind)


def test_every_model_round_trips_and_results_are_mirrored(
    server: ServerProcess, kie: FakeKie, key: str
) -> None:
    image = create_task(
        server.url,
        key,
        {"model": T2I, "input": {"prompt": "a lighthouse at dawn", "aspect_ratio": "16:9"}},
    )
    done = wait_done(server.url, key, image)
    assert done["status"] == "SUCCESS", done
    _mirrored(server, done["response"]["resultUrls"], "image/")
    assert len(done["response"]["resultUrls"]) == 2  # every image kie made is kept
    sent = kie.created_bodies[-1]
    assert sent["model"] == T2I
    assert sent["input"] == {"prompt": "a lighthouse at dawn", "aspect_ratio": "16:9"}
    upstream_image = next(iter(t.id for t in kie.tasks.values() if t.input == sent["input"]))

    video = create_task(
        server.url,
        key,
        {
            "model": T2V,
            "input": {"prompt": "waves", "mode": "fun", "duration": 10, "resolution": "720p"},
        },
    )
    done = wait_done(server.url, key, video)
    assert done["status"] == "SUCCESS", done
    _mirrored(server, done["response"]["resultUrls"], "video/")
    # kie documents duration as a string; an integer from the client is sent as one.
    assert kie.created_bodies[-1]["input"]["duration"] == "10"

    animated = create_task(
        server.url, key, {"model": I2V, "input": {"task_id": image, "index": 1, "prompt": "zoom"}}
    )
    done = wait_done(server.url, key, animated)
    assert done["status"] == "SUCCESS", done
    _mirrored(server, done["response"]["resultUrls"], "video/")
    # Chaining goes by kie's own task id, which kie knows; our id means nothing to it.
    assert kie.created_bodies[-1]["input"] == {
        "task_id": upstream_image,
        "index": 1,
        "prompt": "zoom",
    }

    external = create_task(
        server.url,
        key,
        {"model": I2V, "input": {"image_urls": ["https://example.com/cat.png"], "mode": "normal"}},
    )
    assert wait_done(server.url, key, external)["status"] == "SUCCESS"
    assert kie.created_bodies[-1]["input"]["image_urls"] == ["https://example.com/cat.png"]

    upscaled = create_task(server.url, key, {"model": UPSCALE, "input": {"task_id": image}})
    done = wait_done(server.url, key, upscaled)
    assert done["status"] == "SUCCESS", done
    _mirrored(server, done["response"]["resultUrls"], "image/")
    assert kie.created_bodies[-1]["input"] == {"task_id": upstream_image}
    assert balance(server.url, key) == 1000 - 5 - 24 - 24 - 24 - 12


def test_a_signed_callback_finishes_the_task_without_any_poll(
    server: ServerProcess, kie: FakeKie, key: str
) -> None:
    task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "callback"}})
    done = wait_done(server.url, key, task_id, timeout=120)
    assert done["status"] == "SUCCESS"
    upstream = next(t for t in kie.tasks.values() if t.input == {"prompt": "callback"})
    assert upstream.callback_status == 200
    assert kie.polls_by_task[upstream.id] == 0
    callback_url = upstream.callback_url or ""
    assert callback_url.startswith(f"{server.url}/callbacks/kie/{task_id}/")
    # The status answer never shows the callback URL or its token.
    assert "callbacks" not in orjson.dumps(done).decode()


def test_a_failure_told_by_callback_is_refunded_with_kies_reason(
    server: ServerProcess, kie: FakeKie, key: str
) -> None:
    kie.fail_next.append(("422", "Invalid prompt: prompt contains prohibited content"))
    task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "forbidden"}})
    done = wait_done(server.url, key, task_id, timeout=120)
    assert done["status"] == "FAILED"
    assert "prohibited content" in done["error_message"]
    assert done["consumed_credits"] == 0
    assert balance(server.url, key) == 1000
    upstream = next(t for t in kie.tasks.values() if t.input == {"prompt": "forbidden"})
    assert kie.polls_by_task[upstream.id] == 0


def test_forged_or_misdirected_callbacks_are_refused(
    server: ServerProcess, kie: FakeKie, key: str
) -> None:
    kie.callbacks = False
    try:
        task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "forgery"}})
        upstream = eventually(
            lambda: next((t for t in kie.tasks.values() if t.input == {"prompt": "forgery"}), None)
        )
        time.sleep(kie.task_seconds)
        url = upstream.callback_url or ""
        body = orjson.dumps({"code": 200, "msg": "ok", "data": kie.record(upstream)})
        wrong_token = url.rsplit("/", 1)[0] + "/not-the-token"
        answer = httpx.post(wrong_token, content=body, headers=kie.signature(upstream.id))
        assert answer.status_code == 404
        assert answer.json() == {"code": 404, "message": "no such callback", "data": None}
        unsigned = httpx.post(url, content=body)
        assert unsigned.status_code == 401
        assert "not signed" in unsigned.json()["message"]
        forged = {"X-Webhook-Timestamp": kie.signature(upstream.id)["X-Webhook-Timestamp"]}
        forged["X-Webhook-Signature"] = "AAAA" + kie.signature("other")["X-Webhook-Signature"][4:]
        assert httpx.post(url, content=body, headers=forged).status_code == 401
        stale = kie.signature(upstream.id, timestamp=1_700_000_000)
        assert httpx.post(url, content=body, headers=stale).status_code == 401
        assert (
            httpx.post(url, content=b"{not json", headers=kie.signature(upstream.id)).status_code
            == 400
        )
        # Nothing above finished the task; polling does, as a fallback.
        assert wait_done(server.url, key, task_id, timeout=120)["status"] == "SUCCESS"
        # A late (repeated) callback is answered calmly and changes nothing.
        late = httpx.post(url, content=body, headers=kie.signature(upstream.id))
        assert late.status_code == 200
        assert late.json()["data"]["accepted"] is False
    finally:
        kie.callbacks = True


def test_kie_only_upscales_its_own_images(tmp_path: Path, kie: FakeKie) -> None:
    # Text-to-image on the preview engine, upscale on kie: kie can't upscale that image.
    env = kie_env(kie, IMAGINE_ROUTES="upscale=kie", IMAGINE_PREVIEW_DELAY="0")
    server = start_server(tmp_path / "mixed", env)
    try:
        key = new_key(server.url)["key"]
        image = create_task(server.url, key, {"model": T2I, "input": {"prompt": "local"}})
        assert wait_done(server.url, key, image)["status"] == "SUCCESS"
        answer = generate(server.url, key, {"model": UPSCALE, "input": {"task_id": image}})
        assert answer.status_code == 422
        message = answer.json()["message"]
        assert "kie upscales only images it generated" in message
        assert "preview" in message
        assert balance(server.url, key) == 1000 - 5  # nothing charged for the refusal

        # Image-to-video of that image goes to kie as our copy of it (kie takes a URL).
        animated = create_task(
            server.url, key, {"model": I2V, "input": {"task_id": image, "mode": "normal"}}
        )
        assert wait_done(server.url, key, animated)["status"] == "SUCCESS"
    finally:
        server.stop()


def test_a_progress_kie_reports_is_shown_while_the_task_runs(tmp_path: Path) -> None:
    with FakeKie(task_seconds=60, progress=True) as kie:
        server = start_server(tmp_path / "progress", kie_env(kie, IMAGINE_PROVIDER="kie"))
        try:
            key = new_key(server.url)["key"]
            task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "slow"}})
            seen = wait_for_progress(server.url, key, task_id, at_least=1)
            assert 1 <= seen["progress"] <= 99
            assert cancel(server.url, key, task_id).status_code == 200
        finally:
            server.stop()


@pytest.mark.parametrize("shape", ["minimal", "full"])
def test_unsigned_or_minimal_callbacks_cost_one_poll(tmp_path: Path, shape: str) -> None:
    # Without a webhook key only the URL's token vouches for a callback, so kie is asked;
    # a callback naming only the task needs the same one poll.
    with FakeKie(task_seconds=0.3, callback_shape=shape) as kie:
        server = start_server(tmp_path / "minimal", kie_env(kie, IMAGINE_PROVIDER="kie"))
        try:
            key = new_key(server.url)["key"]
            task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "short"}})
            # The client waits without asking (no inline refresh): only the callback helps.
            deadline_data = _wait_quietly(server, key, task_id)
            assert deadline_data["status"] == "SUCCESS"
            (upstream,) = kie.tasks.values()
            assert upstream.callback_status == 200
            assert kie.polls_by_task[upstream.id] == 1
        finally:
            server.stop()


def test_the_access_log_never_shows_callback_tokens(tmp_path: Path) -> None:
    with FakeKie(task_seconds=0.3) as kie:
        server = ServerProcess(
            tmp_path / "log", kie_env(kie, IMAGINE_PROVIDER="kie", IMAGINE_LOG_LEVEL="info")
        )
        server.env["IMAGINE_PUBLIC_URL"] = server.url
        server.access_log = True
        server.start()
        try:
            key = new_key(server.url)["key"]
            task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "log"}})
            assert _wait_quietly(server, key, task_id)["status"] == "SUCCESS"
            (upstream,) = kie.tasks.values()
            token = (upstream.callback_url or "").rsplit("/", 1)[1]
            log = server.log()
            assert f"POST /callbacks/kie/{task_id}/<token>" in log
            assert token not in log
        finally:
            server.stop()


def eventually(find: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)
    return found


def _wait_quietly(server: ServerProcess, key: str, task_id: str) -> dict[str, object]:
    """Wait for a task by reading the database's view only every 2 s."""
    for _ in range(15):
        time.sleep(2)
        answer = httpx.get(
            f"{server.url}/api/status", params={"task_id": task_id}, headers=auth(key)
        )
        data: dict[str, object] = answer.json()["data"]
        if data["status"] != "IN_PROGRESS":
            return data
    raise AssertionError("the task did not finish")


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_callbacks_failover_and_refunds_hold_on_both_engines(tmp_path: Path, engine: str) -> None:
    """The provider paths that write to the database (callback payloads, the schedule that
    must not bury them, failover, mirroring, refunds) on each engine."""
    from tests.support.api import text_to_image
    from tests.support.databases import (
        create_postgres_database,
        drop_postgres_database,
        ledger_problems,
        query,
        sqlalchemy_url,
    )
    from tests.support.fake_upstream import Answer
    from tests.support.fake_xai import FakeXai
    from tests.support.upstreams import xai_env

    database: str | Path = tmp_path / "engine" / "imagine.db"
    env = {"IMAGINE_DATABASE_URL": f"sqlite+aiosqlite:///{(tmp_path / 'engine' / 'imagine.db')}"}
    if engine == "postgres":
        database = create_postgres_database()
        env["IMAGINE_DATABASE_URL"] = sqlalchemy_url(database)
    with FakeKie(task_seconds=0.3, webhook_key="k") as kie, FakeXai(task_seconds=0.3) as xai:
        env.update(kie_env(kie), **xai_env(xai))
        env.update(IMAGINE_PROVIDER="kie", IMAGINE_ROUTES="text-to-image=kie,xai")
        server = start_server(tmp_path / "engine", env)
        try:
            key = new_key(server.url, credits=100)["key"]
            by_callback = create_task(server.url, key, text_to_image("called back"))
            assert _wait_quietly(server, key, by_callback)["status"] == "SUCCESS"
            kie.script("create", Answer(status=455, message="maintenance"))
            moved = create_task(server.url, key, text_to_image("moved"))
            assert wait_done(server.url, key, moved)["status"] == "SUCCESS"
            kie.fail_next.append(("500", "Internal server error"))
            failed = create_task(server.url, key, text_to_image("failed"))
            assert wait_done(server.url, key, failed)["status"] == "FAILED"
            called_back = next(t for t in kie.tasks.values() if t.input["prompt"] == "called back")
            assert kie.polls_by_task[called_back.id] == 0
            assert xai.calls["create"] == 1
            assert balance(server.url, key) == 100 - 5 - 5
            rows = query(database, "SELECT provider, status FROM tasks ORDER BY created_at")
            assert [tuple(row) for row in rows] == [
                ("kie", "SUCCESS"),
                ("xai", "SUCCESS"),
                ("kie", "FAILED"),
            ]
            assert ledger_problems(database) == []
        finally:
            server.stop()
            if engine == "postgres":
                drop_postgres_database(str(database))


def test_mirroring_is_retried_without_asking_the_provider_again(tmp_path: Path) -> None:
    from tests.support.api import text_to_image

    # Signed callbacks: the result URLs come from the callback, and its retries must keep
    # their backoff like any other.
    with FakeKie(task_seconds=0.3, webhook_key="signing-key") as kie:
        env = kie_env(kie, IMAGINE_PROVIDER="kie", IMAGINE_TASK_DEADLINE="12")
        server = start_server(tmp_path / "mirror", env)
        try:
            key = new_key(server.url, credits=100)["key"]
            kie.result_failures = 2
            task_id = create_task(server.url, key, text_to_image("flaky storage"))
            done = _wait_quietly(server, key, task_id)
            assert done["status"] == "SUCCESS"
            (upstream,) = kie.tasks.values()
            assert kie.result_downloads == 3
            assert kie.polls_by_task[upstream.id] == 0  # the copy was retried, not kie asked

            kie.result_override = b"<html>an error page, not an image</html>"
            task_id = create_task(server.url, key, text_to_image("not media"))
            done = _wait_quietly(server, key, task_id)
            assert done["status"] == "FAILED"
            assert done["error_message"] == (
                "the provider's result is not an image or an MP4 video"
            )

            kie.result_override = None
            kie.result_failures = 1000
            downloads = kie.result_downloads
            task_id = create_task(server.url, key, text_to_image("never stored"))
            done = _wait_quietly(server, key, task_id)
            assert done["status"] == "FAILED"
            assert "did not finish within 12 seconds" in str(done["error_message"])
            # Backoff (1-2 s, 2-4 s, 4-8 s ...) within 12 s: a handful of tries, not a flood.
            assert kie.result_downloads - downloads <= 6
            assert balance(server.url, key) == 100 - 5
        finally:
            server.stop()

"""The xAI provider against the fake xAI API: synchronous images (URL or inline),
deferred videos, image-to-video from a URL or our own copy, and what xAI can't do."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from imagine.providers.media import sniff_content_type
from tests.support.api import (
    balance,
    cancel,
    create_task,
    generate,
    new_key,
    status,
    wait_done,
    wait_for_progress,
)
from tests.support.fake_xai import FakeXai
from tests.support.server import ServerProcess
from tests.support.upstreams import start_server, xai_env

T2I = "grok-imagine/text-to-image"
T2V = "grok-imagine/text-to-video"
I2V = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"


@pytest.fixture(scope="module")
def xai() -> Iterator[FakeXai]:
    with FakeXai(task_seconds=0.3) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(xai: FakeXai, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_server(tmp_path_factory.mktemp("xai"), xai_env(xai, IMAGINE_PROVIDER="xai"))
    yield running
    running.stop()


@pytest.fixture
def key(server: ServerProcess) -> str:
    created: str = new_key(server.url)["key"]
    return created


def _kind_of(url: str) -> str:
    return sniff_content_type(httpx.get(url).content) or ""


def test_images_come_back_synchronously_and_are_mirrored(
    server: ServerProcess, xai: FakeXai, key: str
) -> None:
    for image_format in ("url", "b64_json"):
        xai.image_format = image_format
        task_id = create_task(
            server.url, key, {"model": T2I, "input": {"prompt": "a fox", "aspect_ratio": "9:16"}}
        )
        done = wait_done(server.url, key, task_id)
        assert done["status"] == "SUCCESS", done
        (url,) = done["response"]["resultUrls"]
        assert url.startswith(f"{server.url}/files/")
        assert _kind_of(url) == "image/png"
        sent = xai.image_bodies[-1]
        assert sent["model"] == "grok-imagine-image"
        assert sent["aspect_ratio"] == "9:16"
        assert sent["n"] == 1
    xai.image_format = "url"


def test_videos_are_polled_until_done(server: ServerProcess, xai: FakeXai, key: str) -> None:
    for pending_status in (202, 200):
        xai.pending_status = pending_status
        task_id = create_task(
            server.url,
            key,
            {"model": T2V, "input": {"prompt": "rain", "duration": "10", "resolution": "720p"}},
        )
        done = wait_done(server.url, key, task_id)
        assert done["status"] == "SUCCESS", done
        assert _kind_of(done["response"]["resultUrls"][0]) == "video/mp4"
        body = next(v.body for v in xai.videos.values() if v.body["prompt"] == "rain")
        # Our documented defaults and types, translated to xAI's: duration is an integer.
        assert body["duration"] == 10
        assert body["resolution"] == "720p"
        assert body["aspect_ratio"] == "2:3"
        xai.videos.clear()


def test_a_video_in_progress_shows_how_far_xai_says_it_has_got(
    server: ServerProcess, xai: FakeXai, key: str
) -> None:
    xai.next_task_faults.append("stuck")  # it never finishes
    xai.task_seconds = 60  # its progress climbs over a minute
    try:
        task_id = create_task(server.url, key, {"model": T2V, "input": {"prompt": "slow tide"}})
        seen = wait_for_progress(server.url, key, task_id, at_least=1)
        assert seen["status"] == "IN_PROGRESS"
        assert 1 <= seen["progress"] <= 99
        later = wait_for_progress(server.url, key, task_id, at_least=seen["progress"] + 1)
        assert later["progress"] > seen["progress"]
    finally:
        xai.task_seconds = 0.3
    ended = cancel(server.url, key, task_id)
    assert ended.status_code == 200, ended.text
    assert "progress" not in status(server.url, key, task_id).json()["data"]


def test_image_to_video_sends_urls_as_given_and_our_copies_inline(
    server: ServerProcess, xai: FakeXai, key: str
) -> None:
    external = create_task(
        server.url, key, {"model": I2V, "input": {"image_urls": ["https://example.com/a.png"]}}
    )
    assert wait_done(server.url, key, external)["status"] == "SUCCESS"
    sent = [v.body for v in xai.videos.values() if "image" in v.body]
    assert sent[-1]["image"] == {"url": "https://example.com/a.png"}

    image = create_task(server.url, key, {"model": T2I, "input": {"prompt": "source"}})
    assert wait_done(server.url, key, image)["status"] == "SUCCESS"
    chained = create_task(server.url, key, {"model": I2V, "input": {"task_id": image}})
    assert wait_done(server.url, key, chained)["status"] == "SUCCESS"
    sent = [v.body for v in xai.videos.values() if "image" in v.body]
    data_uri = sent[-1]["image"]["url"]
    # Our result URL may not be reachable from xAI; the image travels in the request.
    assert data_uri.startswith("data:image/png;base64,")
    assert sniff_content_type(base64.b64decode(data_uri.split(",", 1)[1])) == "image/png"

    # The source has one image: asking for the fourth is refused before anything is paid.
    answer = generate(server.url, key, {"model": I2V, "input": {"task_id": image, "index": 3}})
    assert answer.status_code == 422
    assert "has 1 image(s)" in answer.json()["message"]


def test_upscale_is_refused_at_routing_time(server: ServerProcess, key: str) -> None:
    models = {m["model"]: m for m in httpx.get(f"{server.url}/api/models").json()["data"]}
    assert models[UPSCALE]["available"] is False
    assert models[UPSCALE]["routes"] == []
    assert models[T2I]["provider"] == "xai"
    assert models[T2I]["engine"] == "ai"
    image = create_task(server.url, key, {"model": T2I, "input": {"prompt": "small"}})
    assert wait_done(server.url, key, image)["status"] == "SUCCESS"
    before = balance(server.url, key)
    answer = generate(server.url, key, {"model": UPSCALE, "input": {"task_id": image}})
    assert answer.status_code == 400
    assert answer.json()["message"] == (
        "model: grok-imagine/upscale is not available on this server; "
        "no configured provider can run it"
    )
    assert balance(server.url, key) == before


@pytest.mark.parametrize(
    ("ending", "message"),
    [
        ("failed", "the provider could not generate this: generation failed upstream"),
        ("expired", "the provider's request expired before the video was ready"),
    ],
)
def test_failed_and_expired_videos_are_refunded(
    server: ServerProcess, xai: FakeXai, key: str, ending: str, message: str
) -> None:
    xai.video_ending = ending
    try:
        task_id = create_task(server.url, key, {"model": T2V, "input": {"prompt": ending}})
        done = wait_done(server.url, key, task_id)
    finally:
        xai.video_ending = "done"
    assert done["status"] == "FAILED"
    assert done["error_message"] == message
    assert done["consumed_credits"] == 0
    assert balance(server.url, key) == 1000


def test_a_blocked_prompt_fails_with_the_reason(
    server: ServerProcess, xai: FakeXai, key: str
) -> None:
    xai.block_reason = "moderation"
    try:
        task_id = create_task(server.url, key, {"model": T2I, "input": {"prompt": "blocked"}})
        done = wait_done(server.url, key, task_id)
    finally:
        xai.block_reason = None
    assert done["status"] == "FAILED"
    assert done["error_message"] == "the provider blocked this prompt: moderation"
    assert balance(server.url, key) == 1000

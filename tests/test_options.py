"""The optional inputs kie.ai documents (aspect_ratio, mode, duration, resolution, index):
accepted per model with their documented values, refused clearly otherwise."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import create_task, generate, wait_done
from tests.support.server import ServerProcess

T2I = "grok-imagine/text-to-image"
T2V = "grok-imagine/text-to-video"
I2V = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"


@pytest.mark.parametrize(
    ("model", "given", "message"),
    [
        (
            T2I,
            {"aspect_ratio": "4:5"},
            "input.aspect_ratio: must be one of 2:3, 3:2, 1:1, 16:9, 9:16",
        ),
        (T2I, {"mode": "fun"}, "input.mode: not used by grok-imagine/text-to-image"),
        (T2V, {"mode": "wild"}, "input.mode: must be one of fun, normal, spicy"),
        (T2V, {"duration": "15"}, "input.duration: must be one of 6, 10"),
        (T2V, {"duration": 7}, "input.duration: must be one of 6, 10"),
        (T2V, {"resolution": "1080p"}, "input.resolution: must be one of 480p, 720p"),
        (T2V, {"index": 1}, "input.index: not used by grok-imagine/text-to-video"),
    ],
)
def test_bad_options_name_the_field(
    server: ServerProcess, key: str, model: str, given: dict[str, Any], message: str
) -> None:
    answer = generate(server.url, key, {"model": model, "input": {"prompt": "p", **given}})
    assert answer.status_code == 422
    assert answer.json() == {"code": 422, "message": message, "data": None}


def test_options_of_image_to_video(server: ServerProcess, key: str) -> None:
    url = "https://example.com/cat.png"
    spicy = generate(
        server.url, key, {"model": I2V, "input": {"image_urls": [url], "mode": "spicy"}}
    )
    assert spicy.status_code == 422
    assert spicy.json()["message"].startswith("input.mode: spicy is not available with")
    index = generate(server.url, key, {"model": I2V, "input": {"image_urls": [url], "index": 1}})
    assert index.status_code == 422
    assert index.json()["message"].startswith("input.index: only with input.task_id")
    upscale = generate(
        server.url, key, {"model": UPSCALE, "input": {"task_id": "t1", "resolution": "720p"}}
    )
    assert upscale.json()["message"] == "input.resolution: not used by grok-imagine/upscale"


def test_valid_options_are_kept_in_the_request_and_used(server: ServerProcess, key: str) -> None:
    task_id = create_task(
        server.url, key, {"model": T2I, "input": {"prompt": "wide", "aspect_ratio": "16:9"}}
    )
    done = wait_done(server.url, key, task_id)
    assert done["request"]["input"] == {"prompt": "wide", "aspect_ratio": "16:9"}
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(httpx.get(done["response"]["resultUrls"][0]).content))
    assert image.width > image.height  # the preview engine draws the ratio asked for
    models = {m["model"]: m for m in httpx.get(f"{server.url}/api/models").json()["data"]}
    assert models[T2V]["options"]["duration"] == ["6", "10"]
    assert models[I2V]["options"]["index"] == ["0", "1", "2", "3", "4", "5"]

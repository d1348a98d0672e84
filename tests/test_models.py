"""Each model's happy path makes a real file, served under /files/ with its content type."""

from __future__ import annotations

import io
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.support.api import balance, create_task, generate, new_key, wait_done
from tests.support.images import image_server, png_bytes
from tests.support.server import ServerProcess


def fetch(url: str, content_type: str) -> bytes:
    answer = httpx.get(url)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == content_type
    return answer.content


def open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def video_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, frames) of an MP4 after decoding every frame."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, frames


def succeed(server: ServerProcess, key: str, body: dict[str, Any]) -> dict[str, Any]:
    data = wait_done(server.url, key, create_task(server.url, key, body))
    assert data["status"] == "SUCCESS", data
    assert data["error_message"] is None
    urls = data["response"]["resultUrls"]
    assert len(urls) == 1
    assert urls[0].startswith(f"{server.url}/files/")
    return data


def test_text_to_image_makes_a_png_drawn_from_the_prompt(server: ServerProcess, key: str) -> None:
    first = succeed(server, key, {"input": {"prompt": "a red lighthouse"}})
    again = succeed(server, key, {"input": {"prompt": "a red lighthouse"}})
    other = succeed(server, key, {"input": {"prompt": "a green forest"}})
    image = open_png(fetch(first["response"]["resultUrls"][0], "image/png"))
    assert image.size == (768, 768)
    same = fetch(again["response"]["resultUrls"][0], "image/png")
    different = fetch(other["response"]["resultUrls"][0], "image/png")
    assert fetch(first["response"]["resultUrls"][0], "image/png") == same
    assert same != different
    assert first["consumed_credits"] == 5


def test_text_to_video_makes_an_mp4(server: ServerProcess, key: str) -> None:
    data = succeed(
        server, key, {"model": "grok-imagine/text-to-video", "input": {"prompt": "waves"}}
    )
    width, height, frames = video_facts(fetch(data["response"]["resultUrls"][0], "video/mp4"))
    assert frames >= 24
    assert width > 0
    assert height > 0
    assert data["consumed_credits"] == 24


@pytest.mark.parametrize(
    ("given", "size", "seconds"),
    [
        ({}, (240, 360), 6),  # the defaults: 2:3, 6 s, 480p
        ({"aspect_ratio": "16:9", "duration": "10", "resolution": "720p"}, (640, 360), 10),
        ({"aspect_ratio": "9:16", "resolution": "480p"}, (240, 426), 6),
        ({"aspect_ratio": "1:1", "duration": "10"}, (240, 240), 10),
    ],
)
def test_the_preview_honours_the_shape_and_length_asked_for(
    server: ServerProcess, key: str, given: dict[str, str], size: tuple[int, int], seconds: int
) -> None:
    """The aspect ratio and the length as asked, at half the resolution (a preview)."""
    body = {"model": "grok-imagine/text-to-video", "input": {"prompt": "tide", **given}}
    data = succeed(server, key, body)
    width, height, frames = video_facts(fetch(data["response"]["resultUrls"][0], "video/mp4"))
    assert (width, height) == size
    assert frames == seconds * 12


def test_image_to_video_keeps_the_source_shape_at_the_resolution_asked_for(
    server: ServerProcess, key: str
) -> None:
    image = succeed(server, key, {"input": {"prompt": "a wide bay", "aspect_ratio": "16:9"}})
    body = {"task_id": image["task_id"], "duration": "10", "resolution": "720p"}
    data = succeed(server, key, {"model": "grok-imagine/image-to-video", "input": body})
    width, height, frames = video_facts(fetch(data["response"]["resultUrls"][0], "video/mp4"))
    assert (width, height) == (640, 360)
    assert frames == 120


def test_image_to_video_from_an_earlier_task(server: ServerProcess, key: str) -> None:
    image = succeed(server, key, {"input": {"prompt": "a cat"}})
    data = succeed(
        server,
        key,
        {"model": "grok-imagine/image-to-video", "input": {"task_id": image["task_id"]}},
    )
    _, _, frames = video_facts(fetch(data["response"]["resultUrls"][0], "video/mp4"))
    assert frames >= 24
    assert data["request"]["input"] == {"task_id": image["task_id"]}


def test_image_to_video_from_a_url(make_server: Any) -> None:
    server = make_server({"IMAGINE_ALLOW_PRIVATE_URLS": "true"})
    key = new_key(server.url)["key"]
    with image_server() as images:
        data = succeed(
            server,
            key,
            {
                "model": "grok-imagine/image-to-video",
                "input": {"image_urls": [f"{images}/redirect"], "prompt": "it moves"},
            },
        )
    width, height, frames = video_facts(fetch(data["response"]["resultUrls"][0], "video/mp4"))
    source = Image.open(io.BytesIO(png_bytes()))
    # The source's aspect ratio (3:2) is kept.
    assert abs(width / height - source.width / source.height) < 0.05
    assert frames >= 24


def test_image_to_video_from_one_of_our_result_urls(server: ServerProcess, key: str) -> None:
    image = succeed(server, key, {"input": {"prompt": "a harbour"}})
    data = succeed(
        server,
        key,
        {
            "model": "grok-imagine/image-to-video",
            "input": {"image_urls": image["response"]["resultUrls"]},
        },
    )
    assert video_facts(fetch(data["response"]["resultUrls"][0], "video/mp4"))[2] >= 24


def test_upscale_doubles_the_image(server: ServerProcess, key: str) -> None:
    image = succeed(server, key, {"input": {"prompt": "a tiny house"}})
    data = succeed(
        server, key, {"model": "grok-imagine/upscale", "input": {"task_id": image["task_id"]}}
    )
    original = open_png(fetch(image["response"]["resultUrls"][0], "image/png"))
    bigger = open_png(fetch(data["response"]["resultUrls"][0], "image/png"))
    assert bigger.size == (original.width * 2, original.height * 2)
    assert data["consumed_credits"] == 12
    # An upscale is itself an image task, so it can be upscaled again.
    twice = succeed(
        server, key, {"model": "grok-imagine/upscale", "input": {"task_id": data["task_id"]}}
    )
    assert open_png(fetch(twice["response"]["resultUrls"][0], "image/png")).size == (
        original.width * 4,
        original.height * 4,
    )


def test_an_upscale_past_the_size_limit_is_refused_before_it_is_charged(
    server: ServerProcess, key: str
) -> None:
    source = succeed(server, key, {"input": {"prompt": "a tall tower", "aspect_ratio": "2:3"}})
    sides = []
    for _ in range(3):  # 768 -> 1536 -> 3072 -> 6144 px on the long side
        source = succeed(
            server, key, {"model": "grok-imagine/upscale", "input": {"task_id": source["task_id"]}}
        )
        sides.append(max(open_png(fetch(source["response"]["resultUrls"][0], "image/png")).size))
    assert sides == [1536, 3072, 6144]
    before = balance(server.url, key)
    refused = generate(
        server.url, key, {"model": "grok-imagine/upscale", "input": {"task_id": source["task_id"]}}
    )
    assert refused.status_code == 422, refused.text
    message = refused.json()["message"]
    assert "4096x6144 image would be 8192x12288" in message
    assert "8192 px" in message
    assert balance(server.url, key) == before


def test_unknown_file_is_a_404_in_the_envelope(server: ServerProcess) -> None:
    answer = httpx.get(f"{server.url}/files/tnothing/0.png")
    assert answer.status_code == 404
    assert answer.json() == {
        "code": 404,
        "message": "not found: /files/tnothing/0.png",
        "data": None,
    }


def test_model_list_names_prices_and_the_engine(server: ServerProcess) -> None:
    answer = httpx.get(f"{server.url}/api/models")
    assert answer.status_code == 200
    listed = {item["model"]: item for item in answer.json()["data"]}
    assert {name: item["credits"] for name, item in listed.items()} == {
        "grok-imagine/text-to-image": 5,
        "grok-imagine/text-to-video": 24,
        "grok-imagine/image-to-video": 24,
        "grok-imagine/upscale": 12,
    }
    for item in listed.values():
        assert item["provider"] == "preview"
        assert item["engine"] == "preview"
    assert listed["grok-imagine/upscale"]["inputs"] == ["task_id"]

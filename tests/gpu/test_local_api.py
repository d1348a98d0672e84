"""The local provider end to end: a real `imagine serve` with tiny diffusers pipelines
on the CPU, each model kind making a real PNG or MP4 through the HTTP API."""

from __future__ import annotations

import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
from PIL import Image

from tests.gpu.conftest import local_env
from tests.support.api import balance, create_task, generate, http, new_key, wait_done
from tests.support.databases import ledger_problems, query
from tests.support.server import ServerProcess


def result(url: str) -> bytes:
    answer = http.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.content


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def mp4_shape(data: bytes) -> tuple[int, int, int]:
    """(width, height, frames) of an H.264 MP4."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert frames
    return frames[0].width, frames[0].height, len(frames)


def finished(server: ServerProcess, key: str, body: dict[str, Any]) -> tuple[str, bytes]:
    task_id = create_task(server.url, key, body)
    data = wait_done(server.url, key, task_id, timeout=120)
    assert data["status"] == "SUCCESS", data
    (url,) = data["response"]["resultUrls"]
    return task_id, result(url)


def provider_state(server: ServerProcess, task_id: str) -> dict[str, Any]:
    ((state,),) = query(server.database, f"SELECT provider_state FROM tasks WHERE id = '{task_id}'")
    found: dict[str, Any] = json.loads(state) if isinstance(state, str) else state
    return found


def test_every_model_kind_makes_its_file(local_server: ServerProcess) -> None:
    key = new_key(local_server.url)["key"]
    image_id, image = finished(
        local_server,
        key,
        {
            "model": "grok-imagine/text-to-image",
            "input": {"prompt": "a red fox", "aspect_ratio": "3:2"},
        },
    )
    # 3:2 with a long side of 64, in multiples of 16.
    assert png_size(image) == (64, 48)
    state = provider_state(local_server, image_id)
    assert state["pipeline"] == "StableDiffusionXLPipeline"
    assert isinstance(state["seed"], int)
    assert (state["width"], state["height"]) == (64, 48)

    _, upscaled = finished(
        local_server, key, {"model": "grok-imagine/upscale", "input": {"task_id": image_id}}
    )
    assert png_size(upscaled) == (128, 96)

    video_id, video = finished(
        local_server,
        key,
        {"model": "grok-imagine/image-to-video", "input": {"task_id": image_id}},
    )
    # SVD takes multiples of 64; the tiny UNet makes 8 frames, so 6 s play at 1 fps.
    assert mp4_shape(video) == (64, 64, 8)
    assert provider_state(local_server, video_id)["frames"] == 8

    _, clip = finished(
        local_server,
        key,
        {
            "model": "grok-imagine/text-to-video",
            "input": {"prompt": "waves", "aspect_ratio": "16:9", "duration": "6"},
        },
    )
    # LTX: multiples of 32; 6 s at 4 fps is 24 frames, LTX takes 8k + 1.
    assert mp4_shape(clip) == (64, 32, 25)
    assert balance(local_server.url, key) == 1000 - 5 - 12 - 24 - 24
    assert ledger_problems(local_server.database) == []


def test_waiting_tasks_share_one_pipeline_call(local_server: ServerProcess) -> None:
    key = new_key(local_server.url)["key"]
    body = {
        "model": "grok-imagine/text-to-image",
        "input": {"prompt": "batch", "aspect_ratio": "1:1"},
    }
    before = batched(local_server)
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: create_task(local_server.url, key, body), range(4)))
    for task_id in ids:
        assert wait_done(local_server.url, key, task_id, timeout=60)["status"] == "SUCCESS"
    after = batched(local_server)
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(grown.values()) == 4
    assert max(size for size, count in grown.items() if count) > 1, grown
    seeds = {provider_state(local_server, task_id)["seed"] for task_id in ids}
    assert len(seeds) == 4


def batched(server: ServerProcess) -> dict[int, float]:
    """Text-to-image tasks run so far, by the size of the call they were in."""
    found: dict[int, float] = {}
    for line in http.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("imagine_local_batch_items_total{") and TEXT_TO_IMAGE in line:
            size = re.search(r'batch_size="(\d+)"', line)
            assert size is not None
            found[int(size.group(1))] = float(line.rsplit(" ", 1)[1])
    return found


TEXT_TO_IMAGE = 'model="grok-imagine/text-to-image"'


def test_a_model_that_fails_refunds_and_a_kind_not_configured_is_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    # A folder that claims to be a pipeline but has none of its parts.
    (broken / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
            }
        )
    )
    env = local_env(models)
    env["IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL"] = str(broken)
    # A text-to-image pipeline can't animate: refused as unusable for image-to-video.
    env["IMAGINE_LOCAL_IMAGE_TO_VIDEO_MODEL"] = str(models["sd"])
    env["IMAGINE_ALLOW_PRIVATE_URLS"] = "true"  # the source is never fetched: it fails first
    with ServerProcess(tmp_path / "data", env) as server:
        key = new_key(server.url)["key"]
        task_id = create_task(
            server.url, key, {"model": "grok-imagine/text-to-image", "input": {"prompt": "x"}}
        )
        done = wait_done(server.url, key, task_id, timeout=60)
        assert done["status"] == "FAILED"
        assert "text-to-image model could not be loaded" in done["error_message"]

        task_id = create_task(
            server.url,
            key,
            {
                "model": "grok-imagine/image-to-video",
                "input": {"image_urls": ["http://127.0.0.1:9/source.png"]},
            },
        )
        done = wait_done(server.url, key, task_id, timeout=60)
        assert done["status"] == "FAILED"
        assert "image-to-video model is not usable" in done["error_message"]
        assert balance(server.url, key) == 1000

        refused = generate(
            server.url, key, {"model": "grok-imagine/text-to-video", "input": {"prompt": "x"}}
        )
        assert refused.status_code == 400
        assert "not available on this server" in refused.json()["message"]
        listed = {m["model"]: m for m in http.get(f"{server.url}/api/models").json()["data"]}
        assert listed["grok-imagine/upscale"]["available"] is False
        assert listed["grok-imagine/text-to-image"]["available"] is True
        assert "IMAGINE_LOCAL_IMAGE_TO_VIDEO_MODEL" in server.log()
    assert ledger_problems(server.database) == []


def test_a_task_cut_off_by_a_kill_is_made_again_with_its_seed(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """SIGKILL while the GPU is on a task: its lease expires, the next process finds no
    run of it in memory and makes it again from the seed it recorded; charged once."""
    env = local_env(models, text_to_video="ltx")
    env["IMAGINE_LEASE_SECONDS"] = "2"
    slow = dict(env, IMAGINE_LOCAL_TEXT_TO_VIDEO_ARGS=json.dumps({"num_inference_steps": 400}))
    first = ServerProcess(tmp_path / "data", slow).start()
    key = new_key(first.url)["key"]
    body = {"model": "grok-imagine/text-to-video", "input": {"prompt": "again", "duration": "6"}}
    task_id = create_task(first.url, key, body)
    deadline = time.monotonic() + 30
    while not (
        query(first.database, f"SELECT upstream_id FROM tasks WHERE id = '{task_id}'")[0][0]
    ):
        assert time.monotonic() < deadline, "the task was never submitted"
        time.sleep(0.05)
    seed = provider_state(first, task_id)["seed"]
    first.kill()
    assert query(first.database, f"SELECT status FROM tasks WHERE id = '{task_id}'") == [
        ("IN_PROGRESS",)
    ]

    with ServerProcess(tmp_path / "data", env, port=first.port) as second:
        done = wait_done(second.url, key, task_id, timeout=90)
        assert done["status"] == "SUCCESS", done
        assert provider_state(second, task_id)["seed"] == seed
        assert balance(second.url, key) == 1000 - 24
    assert ledger_problems(first.database) == []

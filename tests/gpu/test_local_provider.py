"""The local provider in process: every supported pipeline family through the real
loading code, batching, seeds, out-of-memory and the rules that need no model."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import pytest
import torch
from PIL import Image, ImageChops

from imagine import catalog
from imagine.config import SettingsError, load_settings
from imagine.providers.base import (
    Artifact,
    Failed,
    Job,
    ProviderContext,
    ProviderError,
    SourceTask,
    Succeeded,
)
from imagine.providers.local import LocalProvider, create
from imagine.providers.local import engine as engine_module
from imagine.providers.local.engine import Work
from imagine.providers.local.shapes import frames, image_size, video_size
from tests.gpu.conftest import FAST
from tests.support.images import png_bytes

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"
)

SOURCE = png_bytes((80, 60), "teal")


async def load_source(url: str, account_id: str) -> bytes:
    return SOURCE


def context() -> ProviderContext:
    return ProviderContext(
        settings=load_settings(),
        load_source=load_source,
        is_own_url=lambda url: True,
        callback_url=lambda name, task_id, token: "",
        user_agent="test",
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in {
        "IMAGINE_LOCAL_DEVICE": "cpu",
        "IMAGINE_LOCAL_IMAGE_SIDE": "64",
        "IMAGINE_LOCAL_VIDEO_SIDES": json.dumps({"480p": 32, "720p": 64}),
        "IMAGINE_LOCAL_FPS": "4",
        "IMAGINE_LOCAL_BATCH_WAIT": "0.2",
    }.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def provider(env: pytest.MonkeyPatch, kind: str, folder: Path, **extra: str) -> LocalProvider:
    env.setenv(f"IMAGINE_LOCAL_{kind.upper()}_MODEL", str(folder))
    env.setenv(f"IMAGINE_LOCAL_{kind.upper()}_ARGS", FAST)
    for name, value in extra.items():
        env.setenv(f"IMAGINE_LOCAL_{name.upper()}", value)
    return create(context())


def job(model: str, task_id: str = "t1", **given: Any) -> Job:
    if model in (catalog.UPSCALE, catalog.IMAGE_TO_VIDEO):
        given.setdefault("image_urls", ["https://example.com/a.png"])
    return Job(task_id=task_id, model=model, account_id="acc", input=given)


async def run(local: LocalProvider, task: Job) -> tuple[dict[str, Any], Any]:
    """submit then poll, as the worker does in one step; (provider_state, outcome)."""
    submitted = await local.submit(task)
    assert submitted.poll_after == 0
    assert submitted.outcome is None
    sent = replace(task, upstream_id=submitted.upstream_id, state=submitted.state)
    return submitted.state, await local.poll(sent)


def picture(outcome: Any) -> Image.Image:
    assert isinstance(outcome, Succeeded), outcome
    (artifact,) = outcome.results
    assert isinstance(artifact, Artifact)
    assert artifact.content_type == "image/png"
    return Image.open(io.BytesIO(artifact.data))


def video(outcome: Any) -> tuple[int, int, int]:
    assert isinstance(outcome, Succeeded), outcome
    (artifact,) = outcome.results
    assert isinstance(artifact, Artifact)
    assert artifact.content_type == "video/mp4"
    with av.open(io.BytesIO(artifact.data), mode="r") as container:
        decoded = list(container.decode(video=0))
    return decoded[0].width, decoded[0].height, len(decoded)


@pytest.mark.parametrize(
    ("family", "pipeline"),
    [
        ("sd", "StableDiffusionPipeline"),
        ("sdxl", "StableDiffusionXLPipeline"),
        ("flux", "FluxPipeline"),
    ],
)
async def test_text_to_image_families(
    env: pytest.MonkeyPatch, models: dict[str, Path], family: str, pipeline: str
) -> None:
    local = provider(env, "text_to_image", models[family])
    try:
        state, outcome = await run(
            local, job(catalog.TEXT_TO_IMAGE, prompt="fox", aspect_ratio="2:3")
        )
        assert picture(outcome).size == (48, 64)
        assert state["pipeline"] == pipeline
    finally:
        await local.aclose()


@pytest.mark.parametrize(
    ("kind", "family", "model", "size", "count"),
    [
        # 6 s at 4 fps: 24 frames; LTX takes 8k + 1, Wan and CogVideoX 4k + 1.
        ("text_to_video", "ltx", catalog.TEXT_TO_VIDEO, (32, 64), 25),
        ("text_to_video", "wan", catalog.TEXT_TO_VIDEO, (32, 48), 25),
        ("text_to_video", "cogvideox", catalog.TEXT_TO_VIDEO, (32, 48), 25),
        # LTX-Video's folder animates too; the source's 4:3 in multiples of 32.
        ("image_to_video", "ltx", catalog.IMAGE_TO_VIDEO, (32, 32), 25),
        ("image_to_video", "svd", catalog.IMAGE_TO_VIDEO, (64, 64), 8),
    ],
)
async def test_video_families(
    env: pytest.MonkeyPatch,
    models: dict[str, Path],
    kind: str,
    family: str,
    model: str,
    size: tuple[int, int],
    count: int,
) -> None:
    local = provider(env, kind, models[family])
    try:
        given: dict[str, Any] = {"prompt": "waves", "duration": 6}
        if model == catalog.TEXT_TO_VIDEO:
            given["aspect_ratio"] = "2:3"
        state, outcome = await run(local, job(model, **given))
        assert video(outcome) == (*size, count)
        assert state["frames"] == count
    finally:
        await local.aclose()


async def test_upscale_is_twice_the_source(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    local = provider(env, "upscale", models["x4"])
    try:
        _, outcome = await run(local, job(catalog.UPSCALE))
        assert picture(outcome).size == (160, 120)
    finally:
        await local.aclose()


class Spy:
    """Wraps the engine's run: the batch sizes it was called with."""

    def __init__(self, local: LocalProvider) -> None:
        self.sizes: list[int] = []
        batcher = local._gpu()
        self._run = batcher._run

        def run(batch: Sequence[Work]) -> list[engine_module.Made]:
            self.sizes.append(len(batch))
            return self._run(batch)

        batcher._run = run


async def test_compatible_tasks_go_in_one_call_and_keep_their_seeds(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    local = provider(env, "text_to_image", models["sd"], batch_size="3")
    spy = Spy(local)
    try:
        tasks = [job(catalog.TEXT_TO_IMAGE, f"t{i}", prompt=f"p{i}") for i in range(4)]
        tasks.append(job(catalog.TEXT_TO_IMAGE, "wide", prompt="w", aspect_ratio="16:9"))
        done = await asyncio.gather(*(run(local, task) for task in tasks))
        # Three square ones together, the fourth alone, the wide one in a call of its own.
        assert sorted(spy.sizes) == [1, 1, 3]
        assert len({state["seed"] for state, _ in done}) == 5

        # The same task made again alone, from its recorded seed, in a fresh provider (a
        # restarted worker): the same picture, whatever its batch was.
        state, outcome = done[1]
        again = provider(env, "text_to_image", models["sd"])
        try:
            replay = replace(tasks[1], upstream_id="local-t1", state=state)
            second = await again.poll(replay)
        finally:
            await again.aclose()
        assert same(picture(outcome), picture(second))
    finally:
        await local.aclose()


def same(a: Image.Image, b: Image.Image) -> bool:
    """Equal within a level or two: a batched call rounds differently from a lone one."""
    extrema: Any = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getextrema()
    return bool(max(high for _, high in extrema) <= 2)


async def test_out_of_memory_retries_alone_then_fails_that_task_only(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    local = provider(env, "text_to_image", models["sd"], batch_size="4")
    engine = local._gpu()
    real = engine_module.Engine._call
    seen: list[list[str]] = []

    def call(self: engine_module.Engine, pipe: Any, batch: Sequence[Work]) -> Any:
        seen.append([work.prompt for work in batch])
        if len(batch) > 1 or batch[0].prompt == "huge":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        return real(self, pipe, batch)

    env.setattr(engine_module.Engine, "_call", call)
    try:
        tasks = [
            job(catalog.TEXT_TO_IMAGE, f"t{i}", prompt=p) for i, p in enumerate(["a", "huge", "b"])
        ]
        outcomes = [outcome for _, outcome in await asyncio.gather(*(run(local, t) for t in tasks))]
        assert seen[0] == ["a", "huge", "b"]
        assert sorted(map(tuple, seen[1:])) == [("a",), ("b",), ("huge",)]
        assert isinstance(outcomes[1], Failed)
        assert outcomes[1].message.startswith("the GPU ran out of memory making this (64x64)")
        assert isinstance(outcomes[0], Succeeded)
        assert isinstance(outcomes[2], Succeeded)
        # The worker goes on serving.
        _, later = await run(local, job(catalog.TEXT_TO_IMAGE, "later", prompt="c"))
        assert isinstance(later, Succeeded)
        assert engine is local._gpu()
    finally:
        await local.aclose()


async def test_a_pipeline_error_fails_the_task_with_its_message(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    local = provider(env, "text_to_image", models["sd"])

    def call(self: engine_module.Engine, pipe: Any, batch: Sequence[Work]) -> Any:
        raise ValueError("`height` and `width` have to be divisible by 8")

    env.setattr(engine_module.Engine, "_call", call)
    try:
        _, outcome = await run(local, job(catalog.TEXT_TO_IMAGE, prompt="x"))
        assert isinstance(outcome, Failed)
        assert outcome.message == (
            "the local model failed: ValueError: `height` and `width` have to be divisible by 8"
        )
    finally:
        await local.aclose()


async def test_a_full_queue_leaves_tasks_to_other_workers(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    local = provider(env, "text_to_image", models["sd"], max_queued="1", batch_wait="1")
    try:
        first = asyncio.ensure_future(run(local, job(catalog.TEXT_TO_IMAGE, "t1", prompt="a")))
        await asyncio.sleep(0.05)
        with pytest.raises(ProviderError) as caught:
            await local.submit(job(catalog.TEXT_TO_IMAGE, "t2", prompt="b"))
        assert caught.value.deferred
        assert caught.value.retryable
        _, outcome = await first
        assert isinstance(outcome, Succeeded)
    finally:
        await local.aclose()


async def test_device_none_routes_here_but_defers(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    local = provider(env, "text_to_image", models["sd"], device="none")
    with pytest.raises(ProviderError) as caught:
        await local.submit(job(catalog.TEXT_TO_IMAGE, prompt="a"))
    assert caught.value.deferred
    assert "IMAGINE_LOCAL_DEVICE=none" in caught.value.message
    health = await local.check()
    assert health.ok
    assert "device none" in health.detail


def test_models_are_the_configured_kinds(env: pytest.MonkeyPatch, models: dict[str, Path]) -> None:
    env.setenv("IMAGINE_LOCAL_UPSCALE_MODEL", str(models["x4"]))
    env.setenv("IMAGINE_LOCAL_TEXT_TO_VIDEO_MODEL", str(models["ltx"]))
    assert create(context()).models == {catalog.UPSCALE, catalog.TEXT_TO_VIDEO}


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "IMAGINE_LOCAL_TEXT_TO_IMAGE_ARGS",
            '{"height": 4096}',
            "invalid setting IMAGINE_LOCAL_TEXT_TO_IMAGE_ARGS: height is set from each task; "
            "remove it",
        ),
        (
            "IMAGINE_LOCAL_TEXT_TO_IMAGE_ARGS",
            "steps=4",
            "invalid setting IMAGINE_LOCAL_TEXT_TO_IMAGE_ARGS: write a JSON object, e.g. "
            '{"num_inference_steps": 4}',
        ),
        (
            "IMAGINE_LOCAL_DEVICE",
            "gpu0",
            "invalid setting IMAGINE_LOCAL_DEVICE: use auto, none, cpu, cuda or cuda:N",
        ),
        (
            "IMAGINE_LOCAL_VIDEO_SIDES",
            '{"480p": 480}',
            "invalid setting IMAGINE_LOCAL_VIDEO_SIDES: give a short side for 720p",
        ),
    ],
)
def test_bad_settings_stop_the_start_in_one_line(
    env: pytest.MonkeyPatch, models: dict[str, Path], name: str, value: str, line: str
) -> None:
    env.setenv("IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL", str(models["sd"]))
    env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        create(context())
    assert str(caught.value) == line


def test_no_model_folder_at_all_is_a_settings_error(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="give at least one model folder"):
        create(context())


def test_sizes_and_frames() -> None:
    assert image_size("1:1", 1024, 16) == (1024, 1024)
    assert image_size("2:3", 1024, 16) == (688, 1024)
    assert image_size("16:9", 1024, 16) == (1024, 576)
    assert video_size(16, 9, 480, 32) == (864, 480)
    assert video_size(2, 3, 720, 16) == (720, 1088)
    assert video_size(9, 16, 720, 32) == (736, 1280)
    # LTX: 6 s at 24 fps -> 145 frames (8k + 1); 10 s -> 241.
    assert frames(6, 24, 8, 257) == (145, 24)
    assert frames(10, 24, 8, 257) == (241, 24)
    # Wan makes at most 81 frames: a 10 s video plays them at 8 fps.
    assert frames(10, 16, 4, 81) == (81, 8)
    # SVD-XT: 25 frames over 6 s.
    assert frames(6, 7, 1, 25) == (25, 4)


def test_an_upscale_past_the_size_limit_is_refused_before_paying(
    env: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    env.setenv("IMAGINE_LOCAL_UPSCALE_MODEL", str(models["x4"]))
    local = create(context())
    big = SourceTask("t0", catalog.TEXT_TO_IMAGE, "local", "local-t0", ["u"], [[5000, 4000]])
    assert local.refusal(catalog.UPSCALE, {"task_id": "t0"}, big) == (
        "input.task_id: the upscale of its 5000x4000 image would be 10000x8000; "
        "the limit is 8192 px on a side"
    )
    small = SourceTask("t0", catalog.TEXT_TO_IMAGE, "local", "local-t0", ["u"], [[1024, 1024]])
    assert local.refusal(catalog.UPSCALE, {"task_id": "t0"}, small) is None

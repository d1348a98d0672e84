"""What a task's inputs mean for a pipeline: sizes rounded to what it needs, a duration
as frames at its frame rate, and which pipeline class each model folder is called with.
Pure: no torch here, so the rules are tested anywhere."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagine import catalog

DEFAULT_IMAGE_RATIO = "1:1"
DEFAULT_VIDEO_RATIO = "2:3"
DEFAULT_SECONDS = 6
DEFAULT_RESOLUTION = "480p"
MAX_VIDEO_LONG_SIDE = 1920


@dataclass(frozen=True, slots=True)
class Family:
    """How one pipeline class is called."""

    pipeline: str
    """The diffusers class the folder is loaded with for this model kind."""
    multiple: int = 16
    """Width and height must be multiples of this."""
    fps: int = 0
    """The frame rate it was trained at (videos)."""
    frame_step: int = 1
    """Frame counts it takes are `frame_step * k + 1` (1: any count)."""
    max_frames: int = 0
    prompt: bool = True
    """Whether the call takes a prompt."""
    fps_argument: str | None = None
    """The call's frame-rate argument, if it has one."""
    extra: tuple[tuple[str, object], ...] = ()
    """Arguments we pass unless the operator's `..._ARGS` say otherwise."""


def _ltx(pipeline: str) -> Family:
    return Family(
        pipeline, multiple=32, fps=24, frame_step=8, max_frames=257, fps_argument="frame_rate"
    )


TEXT_TO_VIDEO = {
    "LTXPipeline": _ltx("LTXPipeline"),
    "LTXImageToVideoPipeline": _ltx("LTXPipeline"),
    "WanPipeline": Family("WanPipeline", multiple=16, fps=16, frame_step=4, max_frames=81),
    "CogVideoXPipeline": Family(
        "CogVideoXPipeline", multiple=16, fps=8, frame_step=4, max_frames=49
    ),
}
"""Text-to-video: the `_class_name` of a folder's model_index.json -> how it is called."""

IMAGE_TO_VIDEO = {
    "StableVideoDiffusionPipeline": Family(
        "StableVideoDiffusionPipeline",
        multiple=64,
        fps=7,
        max_frames=0,  # the UNet's own num_frames (14 for SVD, 25 for SVD-XT)
        prompt=False,
        fps_argument="fps",
        extra=(("decode_chunk_size", 8),),
    ),
    "LTXPipeline": _ltx("LTXImageToVideoPipeline"),
    "LTXImageToVideoPipeline": _ltx("LTXImageToVideoPipeline"),
}
"""Image-to-video: the folder's class -> how it is called (LTX-Video's one folder serves both)."""

UPSCALE = {
    "StableDiffusionUpscalePipeline": Family("StableDiffusionUpscalePipeline", multiple=8),
}
UPSCALE_FACTOR = 2
"""The API's upscale is 2x; a 4x model's result is resampled to it."""

FAMILIES = {
    catalog.TEXT_TO_VIDEO: TEXT_TO_VIDEO,
    catalog.IMAGE_TO_VIDEO: IMAGE_TO_VIDEO,
    catalog.UPSCALE: UPSCALE,
}
"""Per model kind, the pipeline classes it takes; text-to-image takes whatever diffusers'
AutoPipelineForText2Image maps the folder to."""


def round_to(value: float, multiple: int) -> int:
    """The nearest multiple of `multiple` (halves round up), at least `multiple`."""
    return max(multiple, multiple * math.floor(value / multiple + 0.5))


def ratio(aspect_ratio: str) -> tuple[int, int]:
    width, height = (int(part) for part in aspect_ratio.split(":"))
    return width, height


def image_size(aspect_ratio: str, long_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) of an image of `aspect_ratio` whose long side is `long_side`."""
    w, h = ratio(aspect_ratio)
    scale = long_side / max(w, h)
    return round_to(w * scale, multiple), round_to(h * scale, multiple)


def video_size(
    width_ratio: float, height_ratio: float, short_side: int, multiple: int
) -> tuple[int, int]:
    """(width, height) of a frame of the given proportions whose short side is `short_side`
    (the long side at most MAX_VIDEO_LONG_SIDE)."""
    scale = short_side / min(width_ratio, height_ratio)
    scale = min(scale, MAX_VIDEO_LONG_SIDE / max(width_ratio, height_ratio))
    return round_to(width_ratio * scale, multiple), round_to(height_ratio * scale, multiple)


def frames(seconds: float, fps: int, frame_step: int, max_frames: int) -> tuple[int, int]:
    """(frame count, frame rate) of a video `seconds` long: the count the pipeline takes
    nearest to `seconds * fps`; when the model can't make that many, the most it can, at
    a lower frame rate so that the video still lasts about as long as asked."""
    wanted = max(1, round(seconds * fps))
    count = _allowed(wanted, frame_step)
    if max_frames and count > max_frames:
        count = _allowed(max_frames, frame_step, down=True)
        fps = max(1, round(count / seconds))
    return count, fps


def _allowed(count: int, step: int, *, down: bool = False) -> int:
    if step <= 1:
        return max(1, count)
    k = (count - 1) // step if down else round((count - 1) / step)
    return step * max(1, k) + 1


class UnsupportedModel(Exception):
    """A model folder this provider can't use for a model kind; the message names why."""


@dataclass(frozen=True, slots=True)
class Folder:
    """What a model folder's JSON files say, read without loading anything."""

    class_name: str
    family: Family
    max_frames: int


def describe(model: str, path: Path) -> Folder:
    """How the folder at `path` is called for `model`. Raises UnsupportedModel."""
    index = _json(path / "model_index.json")
    if index is None:
        raise UnsupportedModel(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    class_name = str(index.get("_class_name") or "")
    if model == catalog.TEXT_TO_IMAGE:
        # AutoPipelineForText2Image takes the folder's own class; sizes must fit its VAE
        # (and a transformer's 2x2 patches): 16 px for SD, SDXL and FLUX alike.
        vae = _json(path / "vae" / "config.json") or {}
        scale = 2 ** max(0, len(vae.get("block_out_channels") or [0, 0, 0, 0]) - 1)
        return Folder(class_name, Family(class_name, multiple=max(16, 2 * scale)), 0)
    known = FAMILIES[model]
    family = known.get(class_name)
    if family is None:
        raise UnsupportedModel(
            f"{path} holds a {class_name or 'pipeline of no known class'}; for {model} "
            f"use one of {', '.join(sorted(known))}"
        )
    max_frames = family.max_frames
    if family.pipeline == "StableVideoDiffusionPipeline":
        unet = _json(path / "unet" / "config.json") or {}
        max_frames = int(unet.get("num_frames") or 25)
    return Folder(class_name, family, max_frames)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None

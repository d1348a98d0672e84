"""The model catalog: what each model costs, what it needs and what it makes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Output(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    credits: int
    output: Output
    description: str
    needs_prompt: bool = False
    needs_image: bool = False
    """Needs a source image: `input.image_urls` or `input.task_id` of an image task."""
    needs_task: bool = False
    """Needs `input.task_id` naming a finished image task (no external images)."""
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Optional inputs and the values each accepts (kie.ai's documented enums)."""


ASPECT_RATIOS = ("2:3", "3:2", "1:1", "16:9", "9:16")
MODES = ("fun", "normal", "spicy")
DURATIONS = ("6", "10")
RESOLUTIONS = ("480p", "720p")
INDEXES = ("0", "1", "2", "3", "4", "5")
"""`input.index`: which of the source task's images image-to-video animates."""

_VIDEO_OPTIONS = {"mode": MODES, "duration": DURATIONS, "resolution": RESOLUTIONS}

TEXT_TO_IMAGE = "grok-imagine/text-to-image"
TEXT_TO_VIDEO = "grok-imagine/text-to-video"
IMAGE_TO_VIDEO = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"
DEFAULT_MODEL = TEXT_TO_IMAGE

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            TEXT_TO_IMAGE,
            5,
            Output.IMAGE,
            "An image from a text prompt.",
            needs_prompt=True,
            options={"aspect_ratio": ASPECT_RATIOS},
        ),
        ModelSpec(
            TEXT_TO_VIDEO,
            24,
            Output.VIDEO,
            "A short video from a text prompt.",
            needs_prompt=True,
            options={"aspect_ratio": ASPECT_RATIOS, **_VIDEO_OPTIONS},
        ),
        ModelSpec(
            IMAGE_TO_VIDEO,
            24,
            Output.VIDEO,
            "A short video that animates an image (input.image_urls or input.task_id).",
            needs_image=True,
            options={**_VIDEO_OPTIONS, "index": INDEXES},
        ),
        ModelSpec(
            UPSCALE,
            12,
            Output.IMAGE,
            "A 2x upscale of an earlier image task (input.task_id).",
            needs_task=True,
        ),
    )
}


def get_model(name: str) -> ModelSpec | None:
    return MODELS.get(name)


def required_inputs(spec: ModelSpec) -> list[str]:
    """The inputs a model needs, as the model list shows them."""
    if spec.needs_prompt:
        return ["prompt"]
    if spec.needs_image:
        return ["image_urls | task_id"]
    if spec.needs_task:
        return ["task_id"]
    return []

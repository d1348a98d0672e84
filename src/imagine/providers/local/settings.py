"""The local provider's settings (`IMAGINE_LOCAL_*`): a model folder per model kind and
how the worker runs them. Reading them imports nothing of torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from imagine import catalog

RESERVED_ARGS = frozenset(
    {
        "prompt",
        "image",
        "height",
        "width",
        "num_frames",
        "frame_rate",
        "fps",
        "generator",
        "output_type",
        "return_dict",
        "num_images_per_prompt",
        "num_videos_per_prompt",
        "latents",
    }
)
"""Pipeline arguments the provider sets itself, from the task."""


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError('write a JSON object, e.g. {"num_inference_steps": 4}') from None
    return value


PipelineArgs = Annotated[dict[str, Any], NoDecode, BeforeValidator(_json_object)]
Sides = Annotated[dict[str, int], NoDecode, BeforeValidator(_json_object)]


class LocalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGINE_LOCAL_", extra="ignore")

    text_to_image_model: Path | None = Field(
        default=None,
        description="Folder of a text-to-image pipeline (SDXL-Turbo, FLUX.1-schnell, ...).",
    )
    upscale_model: Path | None = Field(
        default=None, description="Folder of a StableDiffusionUpscalePipeline (x4 upscaler)."
    )
    image_to_video_model: Path | None = Field(
        default=None, description="Folder of an image-to-video pipeline (SVD, LTX-Video)."
    )
    text_to_video_model: Path | None = Field(
        default=None, description="Folder of a text-to-video pipeline (LTX-Video, Wan, CogVideoX)."
    )
    text_to_image_args: PipelineArgs = Field(
        default_factory=dict, description="Extra keyword arguments of the text-to-image call."
    )
    upscale_args: PipelineArgs = Field(
        default_factory=dict, description="Extra keyword arguments of the upscale call."
    )
    image_to_video_args: PipelineArgs = Field(
        default_factory=dict, description="Extra keyword arguments of the image-to-video call."
    )
    text_to_video_args: PipelineArgs = Field(
        default_factory=dict, description="Extra keyword arguments of the text-to-video call."
    )
    device: str = Field(
        default="auto",
        description="torch device of this process: auto (cuda if available, else cpu), "
        "cuda, cuda:1, cpu, or none (route here but never run: leave it to GPU workers).",
    )
    dtype: str = Field(
        default="auto",
        description="auto (bfloat16 on a GPU that has it, else float16; float32 on cpu), "
        "bfloat16, float16 or float32.",
    )
    variant: str | None = Field(
        default=None, description="Weight files variant to load, e.g. fp16."
    )
    cpu_offload: bool = Field(
        default=False,
        description="Keep each model in CPU memory and move it to the GPU per call "
        "(slower; for models that don't fit together).",
    )
    batch_size: int = Field(
        default=4, ge=1, le=64, description="Most compatible tasks one pipeline call makes."
    )
    batch_wait: float = Field(
        default=0.05,
        ge=0,
        le=10,
        description="Seconds an idle GPU waits for more compatible tasks before a call.",
    )
    max_queued: int = Field(
        default=16,
        ge=0,
        description="Tasks this process holds (running or waiting for the GPU); more are "
        "left in the queue for other workers (0: no limit).",
    )
    image_side: int = Field(
        default=1024, ge=16, le=4096, description="Long side of a text-to-image result, px."
    )
    video_sides: Sides = Field(
        default_factory=lambda: {"480p": 480, "720p": 720},
        description="Short side of a video, px, per requested resolution.",
    )
    fps: int | None = Field(
        default=None, ge=1, le=60, description="Frame rate of videos (default: the model's)."
    )
    max_frames: int | None = Field(
        default=None, ge=1, le=1000, description="Most frames of a video (default: the model's)."
    )

    @field_validator(
        "text_to_image_args", "upscale_args", "image_to_video_args", "text_to_video_args"
    )
    @classmethod
    def _not_ours(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError("write a JSON object of pipeline arguments")
        taken = sorted(RESERVED_ARGS & set(value))
        if taken:
            raise ValueError(f"{', '.join(taken)} is set from each task; remove it")
        return value

    @field_validator("video_sides")
    @classmethod
    def _every_resolution(cls, value: dict[str, int]) -> dict[str, int]:
        missing = [name for name in catalog.RESOLUTIONS if name not in value]
        if missing:
            raise ValueError(f"give a short side for {', '.join(missing)}")
        if any(not 16 <= side <= 2160 for side in value.values()):
            raise ValueError("each short side is 16 to 2160 px")
        return {name: value[name] for name in catalog.RESOLUTIONS}

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        head, _, index = value.partition(":")
        if value in ("auto", "none", "cpu", "mps") or (
            head in ("cuda", "xpu") and (not index or index.isdigit())
        ):
            return value
        raise ValueError("use auto, none, cpu, cuda or cuda:N")

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError("use auto, bfloat16, float16 or float32")
        return value

    def model_dirs(self) -> dict[str, Path]:
        """The configured model folders, by model name."""
        given = {
            catalog.TEXT_TO_IMAGE: self.text_to_image_model,
            catalog.UPSCALE: self.upscale_model,
            catalog.IMAGE_TO_VIDEO: self.image_to_video_model,
            catalog.TEXT_TO_VIDEO: self.text_to_video_model,
        }
        return {model: path for model, path in given.items() if path is not None}

    def args_for(self, model: str) -> dict[str, Any]:
        return {
            catalog.TEXT_TO_IMAGE: self.text_to_image_args,
            catalog.UPSCALE: self.upscale_args,
            catalog.IMAGE_TO_VIDEO: self.image_to_video_args,
            catalog.TEXT_TO_VIDEO: self.text_to_video_args,
        }[model]


SETTING_OF_MODEL = {
    catalog.TEXT_TO_IMAGE: "IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL",
    catalog.UPSCALE: "IMAGINE_LOCAL_UPSCALE_MODEL",
    catalog.IMAGE_TO_VIDEO: "IMAGINE_LOCAL_IMAGE_TO_VIDEO_MODEL",
    catalog.TEXT_TO_VIDEO: "IMAGINE_LOCAL_TEXT_TO_VIDEO_MODEL",
}

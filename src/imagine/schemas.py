"""The wire shapes of the public API (requests and the `data` of responses)."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from imagine.catalog import DEFAULT_MODEL

MAX_PROMPT = 5000
MAX_URL = 2048
MAX_IMAGE_URLS = 1

T = TypeVar("T")


class _Strict(BaseModel):
    # Strict: "true" is not a boolean and 5 is not a string; unknown fields are typos.
    model_config = ConfigDict(strict=True, extra="forbid")


class GenerateInput(_Strict):
    prompt: str | None = Field(
        default=None,
        max_length=MAX_PROMPT,
        description="Text prompt (required for text-to-image and text-to-video).",
    )
    image_urls: list[str] | None = Field(
        default=None,
        max_length=MAX_IMAGE_URLS,
        description="Source image URL (image-to-video; or give task_id).",
    )
    task_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="An earlier image task of this account (upscale; or image-to-video).",
    )
    aspect_ratio: str | None = Field(
        default=None,
        max_length=16,
        description="2:3, 3:2, 1:1, 16:9 or 9:16 (text-to-image, text-to-video).",
    )
    mode: str | None = Field(
        default=None, max_length=16, description="fun, normal or spicy (video models)."
    )
    duration: str | int | None = Field(
        default=None, description='Seconds of video: "6" or "10" (video models).'
    )
    resolution: str | None = Field(
        default=None, max_length=16, description="480p or 720p (video models)."
    )
    index: int | None = Field(
        default=None,
        description="Which image of the input.task_id task to animate, 0-5 (image-to-video).",
    )


class GenerateRequest(_Strict):
    model: str = Field(
        default=DEFAULT_MODEL,
        description="grok-imagine/text-to-image (default), text-to-video, image-to-video or "
        "upscale.",
    )
    input: GenerateInput
    callback_url: str | None = Field(
        default=None, max_length=MAX_URL, description="Webhook URL told of completion."
    )
    public: bool = Field(default=False, description="Expose the task to public galleries.")


class StatusRequest(_Strict):
    task_id: str = Field(min_length=1, max_length=100)


class Envelope(BaseModel, Generic[T]):
    code: int = 200
    message: str = "success"
    data: T


class ErrorEnvelope(BaseModel):
    code: int
    message: str
    data: None = None


class TaskCreated(BaseModel):
    task_id: str
    status: Literal["IN_PROGRESS", "SUCCESS", "FAILED"]


class TaskResponse(BaseModel):
    resultUrls: list[str]


class TaskStatus(BaseModel):
    task_id: str
    status: Literal["IN_PROGRESS", "SUCCESS", "FAILED"]
    request: dict[str, Any]
    response: TaskResponse | None
    consumed_credits: int
    error_message: str | None
    created_at: str = Field(examples=["2025-06-14T05:21:11Z"])
    completed_at: str | None = None


class Credits(BaseModel):
    account_id: str
    balance: int


class ModelInfo(BaseModel):
    model: str
    credits: int
    output: Literal["image", "video"]
    inputs: list[str]
    options: dict[str, list[str]] = Field(
        description="Optional inputs and the values each accepts."
    )
    available: bool = Field(description="Whether a configured provider serves it.")
    provider: str | None = Field(description="The provider new tasks go to first.")
    routes: list[str] = Field(description="The providers tried, in failover order.")
    engine: Literal["preview", "ai"] | None
    description: str

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


class KeyCreated(BaseModel):
    key: str = Field(description="The key itself; shown this once, never again.")
    key_id: str
    account_id: str
    name: str
    balance: int


class KeyInfo(BaseModel):
    key_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    account_id: str
    balance: int
    created_at: str = Field(examples=["2025-06-14T05:21:11Z"])
    revoked_at: str | None


class LedgerEntry(BaseModel):
    kind: Literal["grant", "adjustment", "debit", "refund"]
    amount: int
    balance_after: int
    task_id: str | None
    note: str | None
    created_at: str = Field(examples=["2025-06-14T05:21:11Z"])


class AccountLedger(BaseModel):
    account_id: str
    balance: int
    ledger: list[LedgerEntry] = Field(description="The newest entries first.")


class ProviderReport(BaseModel):
    name: str
    engine: Literal["preview", "ai"]
    routed_models: list[str]
    ok: bool = Field(description="Reached, and the credentials were accepted.")
    reachable: bool
    detail: str
    balance: float | None = Field(description="The upstream balance, where it tells.")
    latency_ms: float | None


class WebhookSecret(BaseModel):
    secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class DeliveryAttempt(BaseModel):
    at: str = Field(examples=["2025-06-14T05:21:11Z"])
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    error: str | None
    duration_ms: int


class WebhookDelivery(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt.")
    task_id: str
    url: str = Field(description="The callback_url, without credentials or query string.")
    status: Literal["pending", "delivered", "failed", "gone"]
    attempts: list[DeliveryAttempt]
    next_attempt_at: str | None
    created_at: str = Field(examples=["2025-06-14T05:21:11Z"])
    delivered_at: str | None


class TaskPage(BaseModel):
    items: list[TaskStatus] = Field(description="Each as GET /api/status answers it.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class GalleryItem(BaseModel):
    task_id: str
    model: str
    prompt: str | None
    resultUrls: list[str]
    created_at: str = Field(examples=["2025-06-14T05:21:11Z"])


class GalleryPage(BaseModel):
    items: list[GalleryItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class Unpublished(BaseModel):
    task_id: str
    public: Literal[False]


class Cancelled(BaseModel):
    task_id: str
    status: Literal["FAILED"]
    cancelled: Literal[True]
    refunded: bool = Field(description="Whether the task's credits came back.")
    consumed_credits: int


class Health(BaseModel):
    status: Literal["ok"]

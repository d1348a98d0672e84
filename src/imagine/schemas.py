"""The wire shapes of the public API: one definition each, for the code and the docs.

Requests are pydantic models: they validate what comes in. Answers are TypedDicts:
the code that builds an answer is typed with its shape (so mypy checks every field
where it is made, at no cost on the hot paths), and pydantic turns the same classes
into the OpenAPI document. tests/test_wire_schemas.py checks real answers of every
route against that document.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, NotRequired, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from imagine.catalog import DEFAULT_MODEL
from imagine.states import DeliveryStatus, LedgerKind, TaskStatus

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
    """Every success answer: `data` holds the route's shape."""

    code: int = 200
    message: str = "success"
    data: T


class ErrorEnvelope(TypedDict):
    """Every error answer; the HTTP status equals `code`."""

    code: int
    message: str
    data: None


Timestamp = Annotated[str, Field(examples=["2025-06-14T05:21:11Z"])]


class TaskCreated(TypedDict):
    task_id: str
    status: TaskStatus


class TaskResponse(TypedDict):
    resultUrls: list[str]


class StatusData(TypedDict):
    """A task as GET /api/status answers it: the API document's fields, plus completed_at."""

    task_id: str
    status: TaskStatus
    request: dict[str, Any]
    response: TaskResponse | None
    consumed_credits: int
    error_message: str | None
    created_at: Timestamp
    completed_at: Timestamp | None
    progress: NotRequired[
        Annotated[
            int,
            Field(
                ge=0,
                le=100,
                description=(
                    "How far an IN_PROGRESS task has got, in percent, where its provider "
                    "reports it; absent otherwise."
                ),
            ),
        ]
    ]


class Credits(TypedDict):
    account_id: str
    balance: int


class ModelInfo(TypedDict):
    model: str
    credits: int
    output: Literal["image", "video"]
    inputs: list[str]
    options: Annotated[
        dict[str, list[str]], Field(description="Optional inputs and the values each accepts.")
    ]
    available: Annotated[bool, Field(description="Whether a configured provider serves it.")]
    provider: Annotated[str | None, Field(description="The provider new tasks go to first.")]
    routes: Annotated[list[str], Field(description="The providers tried, in failover order.")]
    engine: Literal["preview", "ai"] | None
    description: str


class KeyCreated(TypedDict):
    key: Annotated[str, Field(description="The key itself; shown this once, never again.")]
    key_id: str
    account_id: str
    name: str
    balance: int


class KeyInfo(TypedDict):
    key_id: str
    name: str
    prefix: Annotated[str, Field(description="The first characters of the key, to recognise it.")]
    account_id: str
    balance: int
    created_at: Timestamp
    revoked_at: str | None


class LedgerEntry(TypedDict):
    kind: LedgerKind
    amount: int
    balance_after: int
    task_id: str | None
    note: str | None
    created_at: Timestamp


class AccountLedger(TypedDict):
    account_id: str
    balance: int
    ledger: Annotated[list[LedgerEntry], Field(description="The newest entries first.")]


class ProviderReport(TypedDict):
    name: str
    engine: Literal["preview", "ai"]
    routed_models: list[str]
    ok: Annotated[bool, Field(description="Reached, and the credentials were accepted.")]
    reachable: bool
    detail: str
    balance: Annotated[float | None, Field(description="The upstream balance, where it tells.")]
    latency_ms: float | None


class WebhookSecret(TypedDict):
    secret: Annotated[str, Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])]


class DeliveryAttempt(TypedDict):
    at: Timestamp
    status_code: Annotated[
        int | None, Field(description="The receiver's answer; null when none came.")
    ]
    error: str | None
    duration_ms: int


class WebhookDelivery(TypedDict):
    id: Annotated[str, Field(description="The webhook-id header of every attempt.")]
    task_id: str
    url: Annotated[str, Field(description="The callback_url, without credentials or query string.")]
    status: DeliveryStatus
    attempts: list[DeliveryAttempt]
    next_attempt_at: str | None
    created_at: Timestamp
    delivered_at: str | None


class TaskPage(TypedDict):
    items: Annotated[list[StatusData], Field(description="Each as GET /api/status answers it.")]
    next_cursor: Annotated[str | None, Field(description="Pass as ?cursor= for the next page.")]


class GalleryItem(TypedDict):
    task_id: str
    model: str
    prompt: str | None
    resultUrls: list[str]
    created_at: Timestamp


class GalleryPage(TypedDict):
    items: list[GalleryItem]
    next_cursor: Annotated[str | None, Field(description="Pass as ?cursor= for the next page.")]


class Unpublished(TypedDict):
    task_id: str
    public: Literal[False]


class Cancelled(TypedDict):
    task_id: str
    status: Literal[TaskStatus.FAILED]
    cancelled: Literal[True]
    refunded: Annotated[bool, Field(description="Whether the task's credits came back.")]
    consumed_credits: int


# -- the operator's console (/admin) --------------------------------------------------

_NEXT_CURSOR = Field(description="Pass as ?cursor= for the next page; null on the last one.")


class AccountSummary(TypedDict):
    account_id: str
    name: str
    balance: int
    created_at: Timestamp
    keys: Annotated[int, Field(description="Keys of the account, revoked ones included.")]
    active_keys: Annotated[int, Field(description="Keys not revoked.")]


class AccountPage(TypedDict):
    items: Annotated[list[AccountSummary], Field(description="The newest accounts first.")]
    next_cursor: Annotated[str | None, _NEXT_CURSOR]


class LedgerItem(LedgerEntry):
    id: Annotated[int, Field(description="Grows with every entry.")]


class LedgerPage(TypedDict):
    items: Annotated[list[LedgerItem], Field(description="The newest entries first.")]
    next_cursor: Annotated[str | None, _NEXT_CURSOR]


class TaskAdmin(TypedDict):
    """A task as the operator sees it: its account, where it runs, how far it got."""

    task_id: str
    account_id: str
    model: str
    status: TaskStatus
    provider: Annotated[str, Field(description="The provider the task is (or was) routed to.")]
    upstream_id: Annotated[str | None, Field(description="The provider's id, once submitted.")]
    provider_state: Annotated[
        dict[str, Any] | None,
        Field(description="The provider's bookkeeping; URLs without credentials or query."),
    ]
    attempts: Annotated[int, Field(description="Tries of the current step that failed.")]
    error_message: str | None
    consumed_credits: Annotated[int, Field(description="0 once refunded.")]
    refunded: bool
    request: Annotated[dict[str, Any], Field(description="As GET /api/status shows it.")]
    result_urls: list[str]
    created_at: Timestamp
    completed_at: Timestamp | None
    next_check_at: Annotated[
        Timestamp | None,
        Field(description="When a worker looks at it next; null once it has ended."),
    ]


class TaskAdminPage(TypedDict):
    items: Annotated[list[TaskAdmin], Field(description="The newest tasks first.")]
    next_cursor: Annotated[str | None, _NEXT_CURSOR]


class AdminDelivery(WebhookDelivery):
    account_id: str


class AdminDeliveryPage(TypedDict):
    items: Annotated[list[AdminDelivery], Field(description="The newest deliveries first.")]
    next_cursor: Annotated[str | None, _NEXT_CURSOR]


class QueueFigures(TypedDict):
    due: Annotated[int, Field(description="Unfinished tasks due now that no worker holds.")]
    in_progress: Annotated[int, Field(description="Every unfinished task.")]
    oldest_due_at: Annotated[
        Timestamp | None,
        Field(description="When the longest-waiting due task became due; null: none is."),
    ]
    oldest_due_age_seconds: Annotated[
        float | None, Field(description="How long it has waited since; null: none is due.")
    ]
    webhook_backlog: Annotated[
        int, Field(description="Webhook deliveries due now that no sender holds.")
    ]


class Health(TypedDict):
    status: Literal["ok"]


class Readiness(TypedDict):
    status: Literal["ready"]

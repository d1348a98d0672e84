"""The caller's webhooks: the signing secret (read, rotate) and the deliveries made."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from imagine.api.deps import KEY_REQUIRED, authenticated, query_parameter, query_value
from imagine.api.envelope import EDGE_ERRORS, error_responses, ok
from imagine.schemas import Envelope, WebhookDelivery, WebhookSecret
from imagine.services import webhooks

router = APIRouter(
    prefix="/api",
    tags=["webhooks"],
    dependencies=KEY_REQUIRED,
    responses=error_responses(*EDGE_ERRORS, 401, 503),
)


@router.get(
    "/webhook-secret",
    operation_id="getWebhookSecret",
    summary="The secret that signs your webhooks (Standard Webhooks, whsec_...)",
    response_model=Envelope[WebhookSecret],
)
async def webhook_secret(request: Request) -> Response:
    runtime, caller = await authenticated(request)
    return ok({"secret": await webhooks.secret_of(runtime.db, caller.account_id)})


@router.post(
    "/webhook-secret/rotate",
    operation_id="rotateWebhookSecret",
    summary="Replace the signing secret; later deliveries are signed with the new one",
    response_model=Envelope[WebhookSecret],
)
async def rotate_webhook_secret(request: Request) -> Response:
    runtime, caller = await authenticated(request)
    return ok({"secret": await webhooks.rotate_secret(runtime.db, caller.account_id)})


@router.get(
    "/webhooks",
    operation_id="listWebhookDeliveries",
    summary="Your newest webhook deliveries, each with its attempts and their outcomes",
    response_model=Envelope[list[WebhookDelivery]],
    responses=error_responses(404, 422, described={404: "Unknown task (or another account's)"}),
    openapi_extra={"parameters": [query_parameter("task_id", "Only the deliveries of this task.")]},
)
async def webhook_deliveries(request: Request) -> Response:
    runtime, caller = await authenticated(request)
    task_id = query_value(request, "task_id")
    return ok(await webhooks.deliveries_view(runtime.db, caller.account_id, task_id))

"""Operator endpoints under /admin: keys and credits, and the console's views (accounts,
ledgers, every task, webhook deliveries and their retry, the queue). Off unless
IMAGINE_ADMIN_TOKEN is set."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from imagine.api.deps import (
    RuntimeDep,
    json_body,
    openapi_body,
    path_parameter,
    query_parameter,
    query_value,
    require_admin,
)
from imagine.api.envelope import BAD_PATH, EDGE_ERRORS, error_responses, ok
from imagine.schemas import (
    AccountLedger,
    AccountPage,
    AdminDelivery,
    AdminDeliveryPage,
    Credits,
    Envelope,
    KeyCreated,
    KeyInfo,
    LedgerPage,
    ProviderReport,
    QueueFigures,
    TaskAdmin,
    TaskAdminPage,
)
from imagine.services import admin, keys
from imagine.services.listing import MAX_LIMIT
from imagine.services.providers import provider_report

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    # require_admin brings the document's admin token scheme (deps.ADMIN_TOKEN) along.
    dependencies=[Depends(require_admin)],
    responses=error_responses(
        *EDGE_ERRORS,
        401,
        404,
        described={
            401: "Missing or wrong admin token",
            404: "The admin API is off (IMAGINE_ADMIN_TOKEN unset)",
        },
    ),
)

_UNKNOWN = {404: "Unknown key or account; or the admin API is off (IMAGINE_ADMIN_TOKEN unset)"}


def _errors(*codes: int, described: dict[int, str] | None = None) -> dict[int | str, Any]:
    """What a route answers besides the router's errors (413, 431, 401, 404)."""
    return error_responses(
        *codes, described={400: "A body that is not JSON", **_UNKNOWN, **(described or {})}
    )


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200)
    credits: int = Field(default=0, ge=0, le=10**12)
    account_id: str | None = Field(
        default=None, description="Add the key to this account instead of a new one."
    )


class CreditGrant(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    account: str = Field(description="An account id, a key id or a key.", min_length=1)
    amount: int = Field(
        description="Credits to add; negative takes them back.", ge=-(10**12), le=10**12
    )
    note: str | None = Field(default=None, max_length=500)


@router.post(
    "/keys",
    operation_id="adminCreateKey",
    summary="Create a key (shown once)",
    response_model=Envelope[KeyCreated],
    responses=_errors(400, 404, 422, 503),
    openapi_extra=openapi_body(KeyCreate),
)
async def create_key(request: Request, runtime: RuntimeDep) -> Response:
    body = await json_body(request, KeyCreate)
    assert body is not None
    created = await keys.create_key(
        runtime.db, name=body.name, credits=body.credits, account_id=body.account_id
    )
    return ok(
        {
            "key": created.key,
            "key_id": created.key_id,
            "account_id": created.account_id,
            "name": created.name,
            "balance": created.balance,
        }
    )


@router.get(
    "/keys",
    operation_id="adminListKeys",
    summary="List keys (never their secrets)",
    response_model=Envelope[list[KeyInfo]],
    responses=_errors(503),
)
async def list_keys(runtime: RuntimeDep) -> Response:
    return ok([keys.key_view(key) for key in await keys.list_keys(runtime.db)])


@router.post(
    "/keys/{key_id}/revoke",
    operation_id="adminRevokeKey",
    summary="Revoke a key",
    response_model=Envelope[KeyInfo],
    responses=_errors(400, 404, 503, described=BAD_PATH),
    openapi_extra={"parameters": [path_parameter("key_id", "A key id (key_...) or the key.")]},
)
async def revoke_key(request: Request, runtime: RuntimeDep) -> Response:
    key_id: str = request.path_params["key_id"]
    return ok(keys.key_view(await keys.revoke_key(runtime.db, key_id)))


@router.post(
    "/credits/grant",
    operation_id="adminGrantCredits",
    summary="Grant (or take back) credits",
    response_model=Envelope[Credits],
    responses=_errors(400, 404, 422, 503),
    openapi_extra=openapi_body(CreditGrant),
)
async def grant_credits(request: Request, runtime: RuntimeDep) -> Response:
    body = await json_body(request, CreditGrant)
    assert body is not None
    account_id, balance = await keys.grant_credits(runtime.db, body.account, body.amount, body.note)
    return ok({"account_id": account_id, "balance": balance})


@router.get(
    "/credits/{account}",
    operation_id="adminGetCredits",
    summary="Balance and recent ledger of an account",
    response_model=Envelope[AccountLedger],
    responses=_errors(400, 404, 503, described=BAD_PATH),
    openapi_extra={"parameters": [path_parameter("account", "An account id, a key id or a key.")]},
)
async def show_credits(request: Request, runtime: RuntimeDep) -> Response:
    account: str = request.path_params["account"]
    return ok(keys.credits_view(await keys.account_credits(runtime.db, account)))


@router.get(
    "/providers",
    operation_id="adminListProviders",
    summary="Each provider: routes, reachability, upstream balance",
    response_model=Envelope[list[ProviderReport]],
)
async def providers(runtime: RuntimeDep) -> Response:
    return ok(await provider_report(runtime.router))


# -- the console's views ---------------------------------------------------------------

_INVALID = {422: "A query parameter the API can't accept; the message names it"}
_OFF = "; or the admin API is off (IMAGINE_ADMIN_TOKEN unset)"
_PAGING = [
    query_parameter("cursor", "next_cursor of the previous page.", max_length=200),
    query_parameter("limit", f"Items per page, 1 to {MAX_LIMIT} (default {admin.DEFAULT_LIMIT})."),
]


@router.get(
    "/accounts",
    operation_id="adminListAccounts",
    summary="Accounts, newest first: balance and key counts",
    response_model=Envelope[AccountPage],
    responses=_errors(422, 503, described=_INVALID),
    openapi_extra={"parameters": _PAGING},
)
async def list_accounts(request: Request, runtime: RuntimeDep) -> Response:
    page = await admin.accounts_page(
        runtime.db,
        cursor=query_value(request, "cursor"),
        limit=admin.limit_of(query_value(request, "limit")),
    )
    return ok(page)


@router.get(
    "/accounts/{account_id}/ledger",
    operation_id="adminListLedger",
    summary="An account's ledger, newest first",
    response_model=Envelope[LedgerPage],
    responses=_errors(
        400, 404, 422, 503, described={**BAD_PATH, **_INVALID, 404: "Unknown account" + _OFF}
    ),
    openapi_extra={
        "parameters": [path_parameter("account_id", "An account id (acc_...)."), *_PAGING]
    },
)
async def list_ledger(request: Request, runtime: RuntimeDep) -> Response:
    account_id: str = request.path_params["account_id"]
    page = await admin.ledger_page(
        runtime.db,
        account_id,
        cursor=query_value(request, "cursor"),
        limit=admin.limit_of(query_value(request, "limit")),
    )
    return ok(page)


@router.get(
    "/tasks",
    operation_id="adminListTasks",
    summary="Every account's tasks, newest first, filtered",
    response_model=Envelope[TaskAdminPage],
    responses=_errors(422, 503, described=_INVALID),
    openapi_extra={
        "parameters": [
            query_parameter("status", "IN_PROGRESS, SUCCESS or FAILED."),
            query_parameter("model", "One model's tasks (its full name)."),
            query_parameter("provider", "Tasks routed to this provider."),
            query_parameter("account_id", "One account's tasks."),
            query_parameter("created_after", "Created after this time (ISO 8601, with offset)."),
            query_parameter("created_before", "Created before this time (ISO 8601, with offset)."),
            *_PAGING,
        ]
    },
)
async def list_tasks(request: Request, runtime: RuntimeDep) -> Response:
    page = await admin.tasks_page(
        runtime.db,
        status=query_value(request, "status"),
        model=query_value(request, "model"),
        provider=query_value(request, "provider"),
        account_id=query_value(request, "account_id"),
        created_after=query_value(request, "created_after"),
        created_before=query_value(request, "created_before"),
        cursor=query_value(request, "cursor"),
        limit=admin.limit_of(query_value(request, "limit")),
    )
    return ok(page)


@router.get(
    "/tasks/{task_id}",
    operation_id="adminGetTask",
    summary="One task of any account",
    response_model=Envelope[TaskAdmin],
    responses=_errors(400, 404, 503, described={**BAD_PATH, 404: "Unknown task" + _OFF}),
    openapi_extra={"parameters": [path_parameter("task_id", "A task id.")]},
)
async def get_task(request: Request, runtime: RuntimeDep) -> Response:
    task_id: str = request.path_params["task_id"]
    return ok(await admin.task(runtime.db, task_id))


@router.get(
    "/webhooks/deliveries",
    operation_id="adminListDeliveries",
    summary="Every account's webhook deliveries, newest first, with their attempts",
    response_model=Envelope[AdminDeliveryPage],
    responses=_errors(422, 503, described=_INVALID),
    openapi_extra={
        "parameters": [
            query_parameter("status", "pending, delivered, failed or gone."),
            query_parameter("task_id", "One task's deliveries."),
            query_parameter("account_id", "One account's deliveries."),
            *_PAGING,
        ]
    },
)
async def list_deliveries(request: Request, runtime: RuntimeDep) -> Response:
    page = await admin.deliveries_page(
        runtime.db,
        status=query_value(request, "status"),
        task_id=query_value(request, "task_id"),
        account_id=query_value(request, "account_id"),
        cursor=query_value(request, "cursor"),
        limit=admin.limit_of(query_value(request, "limit")),
    )
    return ok(page)


@router.post(
    "/webhooks/deliveries/{delivery_id}/retry",
    operation_id="adminRetryDelivery",
    summary="Try a delivery again now (failed, gone or pending)",
    response_model=Envelope[AdminDelivery],
    responses=_errors(
        400,
        404,
        409,
        503,
        described={
            **BAD_PATH,
            404: "Unknown delivery" + _OFF,
            409: "The delivery was delivered: nothing to retry",
        },
    ),
    openapi_extra={"parameters": [path_parameter("delivery_id", "A delivery id (msg_...).")]},
)
async def retry_delivery(request: Request, runtime: RuntimeDep) -> Response:
    delivery_id: str = request.path_params["delivery_id"]
    return ok(await admin.retry_delivery(runtime.db, delivery_id))


@router.get(
    "/queue",
    operation_id="adminGetQueue",
    summary="The queue now: due and unfinished tasks, the oldest wait, the webhook backlog",
    response_model=Envelope[QueueFigures],
    responses=_errors(503),
)
async def queue(runtime: RuntimeDep) -> Response:
    return ok(await admin.queue(runtime.db))

"""Operator endpoints under /admin: keys and credits. Off unless IMAGINE_ADMIN_TOKEN is set."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from imagine.api.deps import RuntimeDep, json_body, openapi_body, path_parameter, require_admin
from imagine.api.envelope import BAD_PATH, EDGE_ERRORS, error_responses, ok
from imagine.schemas import (
    AccountLedger,
    Credits,
    Envelope,
    KeyCreated,
    KeyInfo,
    ProviderReport,
)
from imagine.services import keys
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

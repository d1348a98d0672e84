"""Request-scoped dependencies: the runtime, the caller, JSON bodies parsed after auth."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from imagine.api.envelope import validation_problem
from imagine.errors import BadRequest, NotFound, Unauthorized
from imagine.runtime import Runtime
from imagine.services.keys import Caller, authenticate

M = TypeVar("M", bound=BaseModel)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_caller(request: Request) -> Caller:
    runtime: Runtime = request.app.state.runtime
    return await authenticate(runtime.db, request.headers.get("authorization"))


CallerDep = Annotated[Caller, Depends(get_caller)]


async def require_admin(request: Request) -> None:
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.admin_token
    if token is None:
        raise NotFound("the admin API is off: set IMAGINE_ADMIN_TOKEN to turn it on")
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise Unauthorized("invalid admin token: send Authorization: Bearer <IMAGINE_ADMIN_TOKEN>")


async def json_body(request: Request, model: type[M], *, optional: bool = False) -> M | None:
    """Parse the body into `model` (after auth, so anonymous callers learn nothing more)."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return None
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """Document a body that the route reads itself (see `json_body`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }

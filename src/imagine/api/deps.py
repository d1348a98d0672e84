"""Request-scoped dependencies: the runtime, the caller, JSON bodies parsed after auth."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_plus

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


async def authenticated(request: Request) -> tuple[Runtime, Caller]:
    """The runtime and the caller, without FastAPI's dependency machinery.

    The hot routes (generate, status) call this directly: solving declared dependencies
    costs more per request than everything these routes do with the database.
    """
    runtime: Runtime = request.app.state.runtime
    return runtime, await authenticate(runtime.db, header_value(request, b"authorization"))


def header_value(request: Request, name: bytes) -> str | None:
    """One header straight from the ASGI scope (`name` in lower case), without building
    Starlette's `Headers` for the whole request."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


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


def query_value(request: Request, name: str) -> str | None:
    """One query parameter, read straight from the raw query string.

    Starlette's `query_params` parses every parameter into a multi-dict on first use;
    the status call needs one value and is called in tight loops by polling clients.
    """
    raw: bytes = request.scope["query_string"]
    prefix = name.encode() + b"="
    for part in raw.split(b"&"):
        if part.startswith(prefix):
            value = part[len(prefix) :].decode("latin-1")
            return unquote_plus(value) if "%" in value or "+" in value else value
    return None


BEARER: dict[str, Any] = {"security": [{"bearerAuth": []}]}
"""OpenAPI for routes that authenticate with `authenticated` instead of a dependency."""


def query_parameter(name: str, description: str, *, max_length: int = 100) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "maxLength": max_length},
    }


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

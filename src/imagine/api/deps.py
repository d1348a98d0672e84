"""Request-scoped dependencies: the runtime, the caller, JSON bodies parsed after auth."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_plus

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from imagine.api.envelope import field_path, validation_problem
from imagine.errors import BadRequest, InvalidInput, NotFound, Unauthorized
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
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_problem(exc.errors()) from None
    if b"\\u0000" in raw:
        where = nul_path(parsed.model_dump())
        if where is not None:
            raise InvalidInput(f"{where}: {NUL_MESSAGE}")
    return parsed


NUL_MESSAGE = "must not contain the NUL character (\\u0000)"
"""No database stores it in text (PostgreSQL refuses it): it is refused at the edge."""


def nul_path(value: Any, path: tuple[int | str, ...] = ()) -> str | None:
    """Where in a parsed body a string holds a NUL character (`input.prompt`), if anywhere."""
    if isinstance(value, str):
        return field_path(path) if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        found = nul_path(inner, (*path, key))
        if found is not None:
            return found
    return None


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
            if "%" not in value and "+" not in value:
                return value
            value = unquote_plus(value)
            if "\x00" in value:
                raise InvalidInput(f"{name}: {NUL_MESSAGE}")
            return value
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

"""Request-scoped dependencies: the runtime, the caller, JSON bodies parsed after auth."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_plus

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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

# The two bearer schemes of the OpenAPI document. Neither ever refuses a request itself
# (auto_error=False): the 401s are ours, in the envelope, with messages that say what to send.
API_KEY = HTTPBearer(
    scheme_name="bearerAuth",
    description="An API key: `Authorization: Bearer <YOUR_API_KEY>`.",
    auto_error=False,
)
ADMIN_TOKEN = HTTPBearer(
    scheme_name="adminToken",
    description="The operator's token of the /admin API: "
    "`Authorization: Bearer <IMAGINE_ADMIN_TOKEN>`.",
    auto_error=False,
)
KEY_REQUIRED = [Security(API_KEY)]
"""Route dependencies that put the API key scheme on a route's OpenAPI operation; the
route authenticates with `authenticated` (which reads the header itself)."""


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


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_TOKEN)],
) -> None:
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.admin_token
    if token is None:
        raise NotFound("the admin API is off: set IMAGINE_ADMIN_TOKEN to turn it on")
    # None unless the scheme is bearer (in any case) and a token follows it.
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
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


BEARER: dict[str, Any] = {"security": [{API_KEY.scheme_name: []}]}
"""The API key scheme on the OpenAPI operation of a hot route (generate, status), which
solves no dependency at all, not even `KEY_REQUIRED` (docs/design.md, "The hot paths are
lean on purpose")."""


def query_parameter(name: str, description: str, *, max_length: int = 100) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "maxLength": max_length},
    }


def path_parameter(name: str, description: str) -> dict[str, Any]:
    """Document a path parameter that the route reads from `request.path_params`.

    Declared as a FastAPI parameter instead, a `str` would add a 422 to the document
    (FastAPI's default for any route with parameters) that no request can get: every
    path segment is a valid string. (A NUL in it is refused at the edge, 400.)
    """
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
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

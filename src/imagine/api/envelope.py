"""The response envelope `{"code", "message", "data"}` and the mapping of every error to it.

An error answers with the HTTP status equal to its `code` and `data: null`. Nothing
answers 500 with internals: unexpected exceptions are logged and answered generically.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from imagine.errors import BadRequest, ImagineError, InvalidInput
from imagine.schemas import ErrorEnvelope
from imagine.store.db import DatabaseBusy, ValueRefused

logger = logging.getLogger("imagine.api")

_REASONS = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: a body that is not JSON, or a URL on a private address",
    401: "Missing, unknown or revoked key",
    402: "The balance can't cover the model's price",
    404: "Not found",
    409: "The task already ended",
    413: "The body is over the size limit",
    422: "A field holds a value the API can't accept; the message names it",
    429: "The key's rate limit is reached; see Retry-After",
    431: "Headers and URL are over their size limit",
    503: "The database is momentarily busy; retry with exponential backoff",
}

ERROR_SCHEMA: dict[str, Any] = {
    "schema": {"$ref": f"#/components/schemas/{ErrorEnvelope.__name__}"}
}

BAD_PATH = {400: "A path that can't name anything (it holds a NUL character)"}
"""What a route with path parameters answers for a path no name can match."""

EDGE_ERRORS = (413, 431)
"""What the request-size limits answer on every route, before any route runs."""


def error_responses(
    *codes: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for errors, each in the envelope with `data: null` (JSON even
    on routes that answer something else when they succeed)."""
    texts = {**ERROR_DESCRIPTIONS, **(described or {})}
    return {
        code: {"description": texts[code], "content": {"application/json": ERROR_SCHEMA}}
        for code in codes
    }


class EnvelopeResponse(Response):
    media_type = "application/json"


def _dump(payload: Mapping[str, Any]) -> bytes:
    return orjson.dumps(payload)


def ok(data: Any) -> Response:
    return EnvelopeResponse(_dump({"code": 200, "message": "success", "data": data}))


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return EnvelopeResponse(
        _dump({"code": status, "message": message, "data": None}),
        status_code=status,
        headers=headers,
    )


def field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "body"


def validation_problem(errors: list[Any]) -> ImagineError:
    """One clear message from pydantic's errors: the first one, naming its field."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return BadRequest("the request body is not valid JSON; send a JSON object")
    loc = tuple(part for part in first["loc"] if part != "body")
    kind = first["type"]
    if kind == "missing":
        message = "required"
    elif kind == "extra_forbidden":
        message = "unknown field; see /docs for the fields this endpoint takes"
    elif kind == "model_type":
        message = "must be a JSON object"
    else:
        message = first["msg"]
    return InvalidInput(f"{field_path(loc)}: {message}")


def _is_data_error(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.DataError | ValueRefused):
        return True
    original = getattr(exc, "orig", None)
    for candidate in (original, getattr(original, "__cause__", None)):
        if str(getattr(candidate, "sqlstate", "") or "").startswith("22"):
            return True
    return False


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ImagineError)
        return error(exc.status_code, exc.message, headers=exc.headers)

    async def on_request_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problem = validation_problem(list(exc.errors()))
        return error(problem.status_code, problem.message)

    async def on_pydantic_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        problem = validation_problem(exc.errors())
        return error(problem.status_code, problem.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = _REASONS.get(exc.status_code, str(exc.detail))
        if exc.status_code == 404:
            reason = f"not found: {request.url.path}"
        return error(exc.status_code, reason, headers=exc.headers)

    async def on_database_error(_: Request, exc: Exception) -> Response:
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        return error(503, "the database is busy; retry with exponential backoff")

    async def on_driver_error(request: Request, exc: Exception) -> Response:
        # A value the database refuses (a character it can't store, a number out of its
        # range: SQLSTATE class 22) that validation let through is the request's fault.
        if _is_data_error(exc):
            logger.warning("database refused a value: %s", exc.__class__.__name__)
            return error(422, "a value in the request can't be stored; check its characters")
        return await on_unexpected(request, exc)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        logger.error("unexpected error", exc_info=exc)
        return error(500, "internal error; retry with exponential backoff")

    app.add_exception_handler(ImagineError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(ValidationError, on_pydantic_validation)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(OperationalError, on_database_error)
    app.add_exception_handler(DBAPIError, on_driver_error)
    app.add_exception_handler(sqlite3.DataError, on_driver_error)
    app.add_exception_handler(ValueRefused, on_driver_error)
    app.add_exception_handler(DatabaseBusy, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)

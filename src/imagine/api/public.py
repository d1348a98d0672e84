"""The API of the document: generate, status; plus credits and the model list."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from imagine import catalog
from imagine.api.deps import (
    BEARER,
    KEY_REQUIRED,
    RuntimeDep,
    authenticated,
    header_value,
    json_body,
    openapi_body,
    query_parameter,
    query_value,
)
from imagine.api.envelope import EDGE_ERRORS, error_responses, ok
from imagine.errors import ImagineError, InvalidInput
from imagine.runtime import Runtime
from imagine.schemas import (
    Cancelled,
    Credits,
    Envelope,
    GenerateRequest,
    ModelInfo,
    StatusData,
    StatusRequest,
    TaskCreated,
)
from imagine.services.keys import PresentedKey, balance_of, presented_key_hash
from imagine.services.ratelimit import GENERATE, STATUS, Decision
from imagine.states import TaskStatus

router = APIRouter(prefix="/api", responses=error_responses(*EDGE_ERRORS))
logger = logging.getLogger("imagine.api")

_DESCRIBED = {
    400: "A body that is not JSON",
    404: "Unknown task (or another account's)",
}


def _errors(*codes: int, described: dict[int, str] | None = None) -> dict[int | str, Any]:
    """The errors a route of this module can answer (besides the edge's 413 and 431)."""
    return error_responses(*codes, described={**_DESCRIBED, **(described or {})})


_RATE_LIMIT_HEADERS: dict[str, Any] = {
    "X-RateLimit-Limit": {
        "description": "Requests the key may make per window (only when a limit is set).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the window has room again.",
        "schema": {"type": "integer", "minimum": 0},
    },
}
_limited: dict[int | str, dict[str, Any]] = {
    200: {"headers": _RATE_LIMIT_HEADERS},
    429: {
        **error_responses(429)[429],
        "headers": {
            **_RATE_LIMIT_HEADERS,
            "Retry-After": {
                "description": "Seconds to wait before the next request.",
                "schema": {"type": "integer", "minimum": 1},
            },
        },
    },
}
_generate_body = openapi_body(GenerateRequest)
_generate_body["requestBody"]["content"]["application/json"]["example"] = {
    "model": "grok-imagine/text-to-image",
    "input": {"prompt": "A majestic dragon flying over a neon-lit cyberpunk city"},
}
_generate_headers: list[dict[str, Any]] = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "1 to 200 printable ASCII characters (a UUID): the same key with the "
        "same body within 24 hours answers with the first task and charges nothing more.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "wait=N (RFC 7240; N up to 60): hold the answer until the task ends, "
        "at most N seconds, and answer with its status data.",
        "schema": {"type": "string", "maxLength": 100},
        "example": "wait=5",
    },
]
_PREFER_WAIT = _generate_headers[1]
_PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "The wait used, when Prefer: wait=N was sent.",
        "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
    }
}
_status_answer: dict[int | str, Any] = {
    **_limited,
    200: {
        "description": "The task; with `Prefer: wait=N`, once it has ended or N seconds "
        "have passed, whichever comes first.",
        "headers": {**_RATE_LIMIT_HEADERS, **_PREFERENCE_APPLIED},
    },
}


@router.post(
    "/generate",
    operation_id="generate",
    tags=["generation"],
    response_model=Envelope[StatusData | TaskCreated],
    responses={
        **_errors(
            400,
            401,
            402,
            422,
            503,
            described={400: "A body that is not JSON, or a URL on a private address"},
        ),
        **_limited,
        200: {
            "description": "The task's id and status; with `Prefer: wait=N`, its status data "
            "as GET /api/status answers it.",
            "headers": {
                **_RATE_LIMIT_HEADERS,
                "Idempotent-Replayed": {
                    "description": "Present when an Idempotency-Key gave back an earlier task.",
                    "schema": {"type": "string", "enum": ["true"]},
                },
                **_PREFERENCE_APPLIED,
            },
        },
    },
    openapi_extra={
        **_generate_body,
        "parameters": _generate_headers,
        **BEARER,
    },
    summary="Create a generation task",
)
async def generate(request: Request) -> Response:
    """Debits the model's credits and stores the task; answers at once with its id."""
    runtime: Runtime = request.app.state.runtime
    key_hash = presented_key_hash(header_value(request, b"authorization"))
    limited = await runtime.limiter.check(GENERATE, key_hash)
    try:
        idempotency_key = _idempotency_key(header_value(request, b"idempotency-key"))
        body = await json_body(request, GenerateRequest)
    except ImagineError:
        await authenticated(request)  # an invalid key is told so before a bad request
        raise
    assert body is not None
    wait = _preferred_wait(header_value(request, b"prefer"))
    # The key is checked in the create itself: one round trip to the database, not two.
    created = await runtime.tasks.create(PresentedKey(key_hash), body, idempotency_key)
    answer: TaskCreated | StatusData = {"task_id": created.task_id, "status": created.status}
    if wait is not None:
        try:
            answer = await runtime.tasks.wait_for(created.owner, created.task_id, wait) or answer
        except Exception:
            # The task is stored and charged: whatever went wrong while waiting, the
            # client must learn its id, not an error it might retry into a second charge.
            logger.exception("waiting for task %s failed", created.task_id)
    response = _waited(ok(answer), wait)
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return _with_limit(response, limited)


MAX_WAIT = 60


def _preferred_wait(prefer: str | None) -> int | None:
    """`Prefer: wait=N` (RFC 7240): hold the answer up to N seconds (at most 60) for the
    task to finish. Preferences that can't be read are ignored, as the RFC asks."""
    if not prefer:
        return None
    for preference in prefer.replace(";", ",").split(","):
        name, _, value = preference.strip().partition("=")
        seconds = value.strip()
        # ASCII digits only ("²" is a digit to str.isdigit but not to int); a number of
        # more digits than 60 has is more than 60 (and int() refuses thousands of digits).
        if name.strip().lower() == "wait" and seconds.isascii() and seconds.isdigit():
            digits = seconds.lstrip("0") or "0"
            return MAX_WAIT if len(digits) > 2 else min(int(digits), MAX_WAIT)
    return None


MAX_IDEMPOTENCY_KEY = 200


def _idempotency_key(given: str | None) -> str | None:
    if given is None:
        return None
    key = given.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise InvalidInput(
            f"Idempotency-Key: give 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters "
            "(a UUID is a good choice)"
        )
    return key


MAX_TASK_ID = 100
_task_id_query = query_parameter("task_id", "ID returned by /api/generate.")


@router.get(
    "/status",
    operation_id="getStatus",
    tags=["generation"],
    response_model=Envelope[StatusData],
    responses={**_errors(401, 404, 422, 503), **_status_answer},
    openapi_extra={
        "parameters": [{**_task_id_query, "required": True}, _PREFER_WAIT],
        **BEARER,
    },
    summary="Task status",
)
async def status_get(request: Request) -> Response:
    """The latest record of a task; one still in progress is refreshed from its provider."""
    runtime: Runtime = request.app.state.runtime
    key_hash = presented_key_hash(header_value(request, b"authorization"))
    limited = await runtime.limiter.check(STATUS, key_hash)
    try:
        given = query_value(request, "task_id")
    except InvalidInput:
        await authenticated(request)  # an invalid key is told so before a bad task_id
        raise
    if not given or len(given) > MAX_TASK_ID:
        await authenticated(request)  # an invalid key is told so before a bad task_id
        _task_id(given)
        raise InvalidInput("task_id: required; send ?task_id=<id>")
    data = await runtime.tasks.status_data_for_key(key_hash, given)
    wait = _preferred_wait(header_value(request, b"prefer"))
    if wait is not None and data["status"] is TaskStatus.IN_PROGRESS:
        _, caller = await authenticated(request)
        data = await runtime.tasks.wait_for(caller, given, wait) or data
    return _with_limit(_waited(ok(data), wait), limited)


@router.post(
    "/status",
    operation_id="postStatus",
    tags=["generation"],
    response_model=Envelope[StatusData],
    responses={**_errors(400, 401, 404, 422, 503), **_status_answer},
    openapi_extra={
        **openapi_body(StatusRequest),
        "parameters": [_task_id_query, _PREFER_WAIT],
        **BEARER,
    },
    summary="Task status (JSON body)",
)
async def status_post(request: Request) -> Response:
    """As GET, with `{"task_id": ...}` in the body (or `?task_id=` in the query)."""
    runtime, caller = await authenticated(request)
    limited = await runtime.limiter.check(
        STATUS, presented_key_hash(header_value(request, b"authorization"))
    )
    body = await json_body(request, StatusRequest, optional=True)
    task_id = body.task_id if body is not None else _task_id(query_value(request, "task_id"))
    if task_id is None:
        raise InvalidInput('task_id: required; send {"task_id": "<id>"}')
    data = await runtime.tasks.status_data(caller, task_id)
    wait = _preferred_wait(header_value(request, b"prefer"))
    if wait is not None and data["status"] is TaskStatus.IN_PROGRESS:
        data = await runtime.tasks.wait_for(caller, task_id, wait) or data
    return _with_limit(_waited(ok(data), wait), limited)


def _waited(response: Response, wait: int | None) -> Response:
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait}"
    return response


def _with_limit(response: Response, decision: Decision | None) -> Response:
    if decision is not None:
        response.headers.update(decision.headers())
    return response


def _task_id(given: str | None) -> str | None:
    if not given:
        return None
    if len(given) > MAX_TASK_ID:
        raise InvalidInput(f"task_id: String should have at most {MAX_TASK_ID} characters")
    return given


@router.get(
    "/credits",
    operation_id="getCredits",
    response_model=Envelope[Credits],
    responses=_errors(401, 503),
    tags=["account"],
    dependencies=KEY_REQUIRED,
    summary="Your credit balance",
)
async def credits(request: Request) -> Response:
    """The caller's credit balance."""
    runtime, caller = await authenticated(request)
    balance = await balance_of(runtime.db, caller.account_id)
    return ok({"account_id": caller.account_id, "balance": balance})


@router.get(
    "/models",
    operation_id="listModels",
    response_model=Envelope[list[ModelInfo]],
    tags=["models"],
    summary="The models, their prices and providers (no key needed)",
)
async def models(runtime: RuntimeDep) -> Response:
    """Every model: its price, its inputs, and the providers that serve it in order."""
    listed: list[ModelInfo] = []
    for spec in catalog.MODELS.values():
        routes = runtime.router.routes(spec.name)
        first = runtime.router.get(routes[0]) if routes else None
        listed.append(
            {
                "model": spec.name,
                "credits": spec.credits,
                "output": spec.output.value,
                "inputs": catalog.required_inputs(spec),
                "options": {name: list(values) for name, values in spec.options.items()},
                "available": first is not None,
                "provider": first.name if first else None,
                "routes": list(routes),
                "engine": first.engine if first else None,
                "description": spec.description,
            }
        )
    return ok(listed)


@router.post(
    "/cancel",
    operation_id="cancelTask",
    tags=["generation"],
    response_model=Envelope[Cancelled],
    responses=_errors(400, 401, 404, 409, 422, 503),
    dependencies=KEY_REQUIRED,
    openapi_extra={**openapi_body(StatusRequest), "parameters": [_task_id_query]},
    summary="Cancel a task",
)
async def cancel(request: Request) -> Response:
    """Ends an unfinished task as FAILED. Credits come back unless an AI provider had
    already started it (then the answer's `refunded` is false)."""
    runtime, caller = await authenticated(request)
    body = await json_body(request, StatusRequest, optional=True)
    task_id = body.task_id if body is not None else _task_id(query_value(request, "task_id"))
    if task_id is None:
        raise InvalidInput('task_id: required; send {"task_id": "<id>"}')
    return ok(await runtime.tasks.cancel(caller, task_id))

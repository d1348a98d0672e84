"""The API of the document: generate, status; plus credits and the model list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from imagine import catalog
from imagine.api.deps import CallerDep, RuntimeDep, json_body, openapi_body
from imagine.api.envelope import ok
from imagine.errors import InvalidInput
from imagine.schemas import (
    Credits,
    Envelope,
    ErrorEnvelope,
    GenerateRequest,
    ModelInfo,
    StatusRequest,
    TaskCreated,
    TaskStatus,
)
from imagine.services.keys import balance_of
from imagine.services.tasks import status_data

router = APIRouter(prefix="/api", tags=["generation"])

_errors: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text}
    for code, text in (
        (400, "Malformed request"),
        (401, "Missing or invalid API key"),
        (404, "Unknown task"),
        (422, "A field holds a value the API can't accept; the message names it"),
    )
}


@router.post(
    "/generate",
    response_model=Envelope[TaskCreated],
    responses={**_errors, 402: {"model": ErrorEnvelope, "description": "Not enough credits"}},
    openapi_extra=openapi_body(GenerateRequest),
    summary="Create a generation task",
)
async def generate(request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Debits the model's credits and stores the task; answers at once with its id."""
    body = await json_body(request, GenerateRequest)
    assert body is not None
    task_id = await runtime.tasks.create(caller, body)
    return ok({"task_id": task_id, "status": "IN_PROGRESS"})


@router.get(
    "/status", response_model=Envelope[TaskStatus], responses=_errors, summary="Task status"
)
async def status_get(
    runtime: RuntimeDep,
    caller: CallerDep,
    task_id: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """The latest record of a task; one still in progress is refreshed from its provider."""
    if not task_id:
        raise InvalidInput("task_id: required; send ?task_id=<id>")
    task = await runtime.tasks.status(caller, task_id)
    return ok(status_data(task))


@router.post(
    "/status",
    response_model=Envelope[TaskStatus],
    responses=_errors,
    openapi_extra=openapi_body(StatusRequest),
    summary="Task status (JSON body)",
)
async def status_post(
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    task_id: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """As GET, with `{"task_id": ...}` in the body (or `?task_id=` in the query)."""
    body = await json_body(request, StatusRequest, optional=True)
    chosen = body.task_id if body is not None else task_id
    if not chosen:
        raise InvalidInput('task_id: required; send {"task_id": "<id>"}')
    task = await runtime.tasks.status(caller, chosen)
    return ok(status_data(task))


@router.get("/credits", response_model=Envelope[Credits], responses=_errors, tags=["account"])
async def credits(runtime: RuntimeDep, caller: CallerDep) -> Response:
    """The caller's credit balance."""
    balance = await balance_of(runtime.db, caller.account_id)
    return ok({"account_id": caller.account_id, "balance": balance})


@router.get("/models", response_model=Envelope[list[ModelInfo]], tags=["models"])
async def models(runtime: RuntimeDep) -> Response:
    """Every model: its price, the inputs it needs, and which provider serves it."""
    listed = []
    for spec in catalog.MODELS.values():
        provider = runtime.router.route(spec.name)
        listed.append(
            {
                "model": spec.name,
                "credits": spec.credits,
                "output": spec.output.value,
                "inputs": catalog.required_inputs(spec),
                "provider": provider.name,
                "engine": provider.engine,
                "description": spec.description,
            }
        )
    return ok(listed)

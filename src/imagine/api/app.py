"""The application factory."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from imagine import __version__
from imagine.api import admin, callbacks, files, lists, public, webhooks
from imagine.api.admin import CreditGrant, KeyCreate
from imagine.api.docs import install_docs
from imagine.api.envelope import (
    EDGE_ERRORS,
    ERROR_SCHEMA,
    error,
    error_responses,
    install_error_handlers,
    ok,
)
from imagine.api.limits import BodySizeLimit
from imagine.config import Settings
from imagine.ids import KEY_PREFIX, key_prefix
from imagine.runtime import Runtime
from imagine.schemas import (
    Envelope,
    ErrorEnvelope,
    GenerateRequest,
    Health,
    Readiness,
    StatusRequest,
)
from imagine.services.health import readiness_problem, refresh_queue_gauges
from imagine.storage import CONTENT_TYPES
from imagine.web import pages

DESCRIPTION = """\
Grok Imagine generation API: submit image and video tasks, poll their status, get
webhooks. Authenticate with `Authorization: Bearer <YOUR_API_KEY>`. Every answer is
`{"code", "message", "data"}`; an error has the HTTP status of its `code`.
"""


def create_app(settings: Settings, *, public_url: str, run_worker: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, public_url=public_url, run_worker=run_worker)
        app.state.runtime = runtime
        logging.getLogger("uvicorn.access").addFilter(_hide_secrets)
        await runtime.start()
        # Everything built so far lives as long as the process. Frozen, the cyclic GC stops
        # re-scanning it on every full collection, and young collections run less often:
        # measured, this took a third off the cost of POST /api/generate.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="imagine",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by install_docs, from this package's files rather than a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.include_router(public.router)
    app.include_router(admin.router)
    app.include_router(callbacks.router)
    app.include_router(webhooks.router)
    app.include_router(lists.router)
    app.include_router(pages.router)

    @app.get(
        "/healthz",
        operation_id="getHealth",
        tags=["ops"],
        summary="Liveness: answers without touching anything",
        response_model=Envelope[Health],
        responses=error_responses(*EDGE_ERRORS),
    )
    async def healthz() -> Response:
        return ok({"status": "ok"})

    @app.get(
        "/readyz",
        operation_id="getReadiness",
        tags=["ops"],
        summary="Readiness: the database answers and its schema is this version's",
        response_model=Envelope[Readiness],
        responses=error_responses(
            503,
            *EDGE_ERRORS,
            described={503: "Not ready: the message says what is wrong with the database"},
        ),
    )
    async def readyz(request: Request) -> Response:
        problem = await readiness_problem(request.app.state.runtime.db)
        if problem is not None:
            return error(503, problem)
        return ok({"status": "ready"})

    @app.get(
        "/metrics",
        operation_id="getMetrics",
        tags=["ops"],
        summary="Prometheus metrics of this process",
        response_class=MetricsResponse,
        responses={
            200: {
                "description": "The Prometheus text exposition format",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            },
            **error_responses(*EDGE_ERRORS),
        },
    )
    async def metrics(request: Request) -> Response:
        await refresh_queue_gauges(request.app.state.runtime.db)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if settings.s3_location is None:
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        app.mount("/files", StaticFiles(directory=settings.files_dir), name="files")
    else:
        app.include_router(files.router)
    install_docs(app)
    _document_manual_bodies(app, [GenerateRequest, StatusRequest, KeyCreate, CreditGrant])
    return app


_API_KEY = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]+")


def _hide_secrets(record: logging.LogRecord) -> bool:
    """Access-log lines without the secrets a path can hold: the last part of an upstream
    callback's path (its token), and API keys (the admin API takes a key wherever it
    takes a key id), shown by their prefix only, as `imagine keys list` shows them."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3:
        path = str(args[2])
        shown = path
        if shown.startswith("/callbacks/"):
            shown = shown.partition("?")[0].rsplit("/", 1)[0] + "/<token>"
        if KEY_PREFIX in shown:
            shown = _API_KEY.sub(lambda found: key_prefix(found.group()) + "…", shown)
        if shown != path:
            record.args = (*args[:2], shown, *args[3:])
    return True


def _document_manual_bodies(app: FastAPI, models: list[type[Any]]) -> None:
    """The OpenAPI document, plus what FastAPI can't see: the schemas of the bodies that
    routes parse themselves (after authenticating: `deps.json_body`) and of the error
    envelope that `error_responses` refers to, and the `/files` mount (not a route)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema["paths"]["/files/{task_id}/{name}"] = {"get": _files_operation()}
            components = schema["components"].setdefault("schemas", {})
            components.setdefault(
                ErrorEnvelope.__name__,
                TypeAdapter(ErrorEnvelope).json_schema(mode="serialization"),
            )
            for model in models:
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class MetricsResponse(Response):
    media_type = CONTENT_TYPE_LATEST


def _files_operation() -> dict[str, Any]:
    """OpenAPI of the result files that the `/files` mount serves (a mount is not a route,
    so FastAPI does not document it)."""
    stored = {"schema": {"type": "string", "format": "binary"}}
    envelope = {"application/json": ERROR_SCHEMA}
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "tags": ["files"],
        "summary": "A result file, as listed in response.resultUrls",
        "operationId": "getResultFile",
        "parameters": [
            {
                "name": "task_id",
                "in": "path",
                "required": True,
                "description": "The task the file belongs to.",
                "schema": {"type": "string"},
            },
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "The file: its index among the task's results, and an extension.",
                "schema": {"type": "string"},
                "example": "0.png",
            },
            {
                "name": "Range",
                "in": "header",
                "required": False,
                "description": "bytes=START-END: part of the file (video players seek with it).",
                "schema": {"type": "string", "maxLength": 200},
            },
        ],
        "responses": {
            "200": {
                "description": "The file, with its content type",
                "content": dict.fromkeys(CONTENT_TYPES, stored),
            },
            "206": {
                "description": "The requested range of the file",
                "headers": {
                    "Content-Range": {
                        "description": "Which bytes of the file these are.",
                        "schema": {"type": "string"},
                    }
                },
                "content": {**dict.fromkeys(CONTENT_TYPES, stored), "multipart/byteranges": stored},
            },
            "304": {"description": "Not modified (If-None-Match or If-Modified-Since)"},
            "307": {
                "description": "Results in a private bucket: Location is a URL signed just now",
                "headers": {
                    "Location": {"description": "The presigned URL.", "schema": {"type": "string"}}
                },
            },
            "400": {
                "description": "A Range header that can't be read, or a path no file can have",
                "content": {**envelope, **text},
            },
            "404": {"description": "No such file", "content": envelope},
            "413": {"description": "The body is over the size limit", "content": envelope},
            "416": {"description": "A range outside the file", "content": text},
            "503": {"description": "The result bucket is not answering", "content": envelope},
            "431": {
                "description": "Headers and URL are over their size limit",
                "content": envelope,
            },
        },
    }

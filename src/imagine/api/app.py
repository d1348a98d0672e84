"""The application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from imagine import __version__
from imagine.api import admin, callbacks, lists, public, webhooks
from imagine.api.admin import CreditGrant, KeyCreate
from imagine.api.envelope import install_error_handlers, ok
from imagine.api.limits import BodySizeLimit
from imagine.config import Settings
from imagine.runtime import Runtime
from imagine.schemas import GenerateRequest, StatusRequest

DESCRIPTION = """\
Grok Imagine generation API: submit image and video tasks, poll their status, get
webhooks. Authenticate with `Authorization: Bearer <YOUR_API_KEY>`. Every answer is
`{"code", "message", "data"}`; an error has the HTTP status of its `code`.
"""


def create_app(settings: Settings, *, public_url: str, run_worker: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, public_url=public_url)
        app.state.runtime = runtime
        logging.getLogger("uvicorn.access").addFilter(_hide_callback_tokens)
        await runtime.start(run_worker=run_worker)
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

    @app.get("/healthz", tags=["ops"], summary="Liveness: answers without touching anything")
    async def healthz() -> Response:
        return ok({"status": "ok"})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics of this process")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    settings.files_dir.mkdir(parents=True, exist_ok=True)
    app.mount("/files", StaticFiles(directory=settings.files_dir), name="files")
    _document_manual_bodies(app, [GenerateRequest, StatusRequest, KeyCreate, CreditGrant])
    return app


def _hide_callback_tokens(record: logging.LogRecord) -> bool:
    """Access-log lines of upstream callbacks without the secret last part of their path."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and str(args[2]).startswith("/callbacks/"):
        path = str(args[2]).partition("?")[0].rsplit("/", 1)[0] + "/<token>"
        record.args = (*args[:2], path, *args[3:])
    return True


def _document_manual_bodies(app: FastAPI, models: list[type[Any]]) -> None:
    """Add the schemas of bodies that routes parse themselves to the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API key"}
            }
            components = schema["components"].setdefault("schemas", {})
            for model in models:
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

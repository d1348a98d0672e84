"""Lists: the caller's task history, the public gallery (JSON and an HTML page)."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from imagine import catalog
from imagine.api.deps import (
    KEY_REQUIRED,
    RuntimeDep,
    authenticated,
    path_parameter,
    query_parameter,
    query_value,
)
from imagine.api.envelope import BAD_PATH, EDGE_ERRORS, error_responses, ok
from imagine.schemas import Envelope, GalleryPage, TaskPage, Unpublished
from imagine.services import listing
from imagine.store.db import Database

router = APIRouter(responses=error_responses(*EDGE_ERRORS, 503))
_invalid = error_responses(
    422, described={422: "A query parameter the API can't accept; the message names it"}
)

_PAGING = [
    query_parameter("cursor", "next_cursor of the previous page.", max_length=200),
    query_parameter("limit", f"Items per page, 1 to {listing.MAX_LIMIT} (default 20)."),
]
_GALLERY_QUERY = [query_parameter("model", "One model's tasks."), *_PAGING]


@router.get(
    "/api/tasks",
    operation_id="listTasks",
    tags=["generation"],
    summary="Your tasks, newest first",
    response_model=Envelope[TaskPage],
    responses={**error_responses(401), **_invalid},
    dependencies=KEY_REQUIRED,
    openapi_extra={
        "parameters": [
            query_parameter("status", "IN_PROGRESS, SUCCESS or FAILED."),
            query_parameter("model", "One model's tasks."),
            *_PAGING,
        ],
    },
)
async def tasks(request: Request) -> Response:
    """Each item is what `GET /api/status` answers for the task."""
    runtime, caller = await authenticated(request)
    page = await listing.history_page(
        runtime.db,
        caller.account_id,
        status=query_value(request, "status"),
        model=query_value(request, "model"),
        cursor=query_value(request, "cursor"),
        limit=listing.parse_limit(query_value(request, "limit")),
    )
    return ok(page)


@router.get(
    "/api/gallery",
    operation_id="listGallery",
    tags=["gallery"],
    summary="Public finished tasks, newest first (no key needed)",
    response_model=Envelope[GalleryPage],
    responses=_invalid,
    openapi_extra={"parameters": _GALLERY_QUERY},
)
async def gallery(request: Request, runtime: RuntimeDep) -> Response:
    return ok(await _gallery_page(request, runtime.db))


@router.delete(
    "/api/gallery/{task_id}",
    operation_id="unpublishTask",
    tags=["gallery"],
    summary="Take one of your tasks out of the gallery",
    response_model=Envelope[Unpublished],
    responses=error_responses(
        400, 401, 404, described={**BAD_PATH, 404: "Unknown task (or another account's)"}
    ),
    dependencies=KEY_REQUIRED,
    openapi_extra={"parameters": [path_parameter("task_id", "One of your tasks.")]},
)
async def unpublish(request: Request) -> Response:
    task_id: str = request.path_params["task_id"]
    runtime, caller = await authenticated(request)
    await listing.unpublish(runtime.db, caller.account_id, task_id)
    return ok({"task_id": task_id, "public": False})


@router.get(
    "/gallery",
    operation_id="getGalleryPage",
    tags=["gallery"],
    summary="The gallery as a web page",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "The page (HTML)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **_invalid,
    },
    openapi_extra={"parameters": _GALLERY_QUERY},
)
async def gallery_html(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    page = await _gallery_page(request, runtime.db)
    model = query_value(request, "model")
    return HTMLResponse(_render(page, model))


async def _gallery_page(request: Request, db: Database) -> GalleryPage:
    return await listing.gallery_page(
        db,
        model=query_value(request, "model"),
        cursor=query_value(request, "cursor"),
        limit=listing.parse_limit(query_value(request, "limit")),
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{padding:16px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header a{color:#9cf}h1{margin:0;font-size:1.4rem}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));
gap:16px;padding:0 24px 24px}
figure{margin:0;background:#1c1c1c;border-radius:8px;overflow:hidden}
figure img,figure video{width:100%;display:block;background:#000}
figcaption{padding:8px 10px;font-size:.85rem;color:#bbb}
.more{display:block;text-align:center;padding:16px;color:#9cf}
"""


def _render(page: GalleryPage, model: str | None) -> str:
    cards = []
    for item in page["items"]:
        media = []
        for url in item["resultUrls"]:
            src = escape(url, quote=True)
            if url.endswith((".mp4", ".webm")):
                media.append(f'<video src="{src}" controls muted loop playsinline></video>')
            else:
                media.append(f'<img src="{src}" alt="{escape(item["prompt"] or item["model"])}">')
        caption = escape(item["prompt"] or item["model"].removeprefix("grok-imagine/"))
        cards.append(
            f'<figure data-task-id="{escape(item["task_id"])}">{"".join(media)}'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    filters = " ".join(
        f'<a href="/gallery?{urlencode({"model": name})}">'
        f"{escape(name.removeprefix('grok-imagine/'))}</a>"
        for name in catalog.MODELS
    )
    more = ""
    if page["next_cursor"]:
        query = {"cursor": page["next_cursor"], **({"model": model} if model else {})}
        more = f'<a class="more" href="/gallery?{escape(urlencode(query))}">More</a>'
    empty = "" if cards else "<p style='padding:0 24px'>Nothing public yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>Gallery</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>Gallery</h1><a href="/gallery">all</a> {filters}</header>'
        f"{empty}<main>{''.join(cards)}</main>{more}</body></html>"
    )

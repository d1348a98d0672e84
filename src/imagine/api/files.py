"""`/files/<task_id>/<name>` served from a bucket: streamed with ranges and validators, or
a redirect to a fresh presigned URL. (Local results are served by a StaticFiles mount.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from imagine.api.envelope import error
from imagine.storage import FileInfo, Storage, StorageError
from imagine.storage.ranges import MalformedRange, UnsatisfiableRange, parse_range

logger = logging.getLogger(__name__)

router = APIRouter()


@router.api_route("/files/{task_id}/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def result_file(request: Request, task_id: str, name: str) -> Response:
    storage: Storage = request.app.state.runtime.storage
    try:
        return await _serve(storage, request, task_id, name)
    except StorageError as exc:
        logger.warning("%s", exc)
        return error(503, "the result storage is not answering; try again in a moment")


async def _serve(storage: Storage, request: Request, task_id: str, name: str) -> Response:
    info = await storage.stat(task_id, name)
    if info is None:
        return error(404, f"not found: {request.url.path}")
    target = await storage.redirect(task_id, name)
    if target is not None:
        # Each request gets a URL signed just now, so a stored result URL never expires.
        return Response(status_code=307, headers={"Location": target, "Cache-Control": "no-store"})
    headers = _validators(info)
    if _not_modified(request, info):
        return Response(status_code=304, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    start, end, status = 0, info.size, 200
    asked = request.headers.get("range")
    if asked is not None and _range_applies(request, info):
        try:
            chosen = parse_range(asked, info.size)
        except MalformedRange as exc:
            return error(400, f"Range: {exc}")
        except UnsatisfiableRange:
            return PlainTextResponse(
                "Range Not Satisfiable",
                status_code=416,
                headers={"Content-Range": f"bytes */{info.size}"},
            )
        if chosen is not None:
            start, end, status = chosen.start, chosen.end, 206
            headers["Content-Range"] = chosen.content_range(info.size)
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=info.content_type)
    chunks = await storage.open(task_id, name, start, end)
    if chunks is None:
        return error(404, f"not found: {request.url.path}")
    return StreamingResponse(
        _cut_short_on_failure(chunks),
        status_code=status,
        headers=headers,
        media_type=info.content_type,
    )


def _validators(info: FileInfo) -> dict[str, str]:
    headers = {"Last-Modified": format_datetime(info.last_modified, usegmt=True)}
    if info.etag is not None:
        headers["ETag"] = info.etag
    return headers


def _not_modified(request: Request, info: FileInfo) -> bool:
    matches = request.headers.get("if-none-match")
    if matches is not None:
        return info.etag is not None and _etag_listed(matches, info.etag)
    since = _http_date(request.headers.get("if-modified-since"))
    return since is not None and info.last_modified.replace(microsecond=0) <= since


def _range_applies(request: Request, info: FileInfo) -> bool:
    """If-Range: the range only if the file is still the one the client has part of."""
    condition = request.headers.get("if-range")
    if condition is None:
        return True
    if condition.startswith(('"', "W/")):
        return info.etag is not None and condition.strip() == info.etag
    since = _http_date(condition)
    return since is not None and info.last_modified.replace(microsecond=0) <= since


def _etag_listed(header: str, etag: str) -> bool:
    wanted = etag.removeprefix("W/")
    listed = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in listed or wanted in listed


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


async def _cut_short_on_failure(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # The status and length are sent already: a failure now can only end the body
    # early, which the client sees as a short read and retries.
    try:
        async for chunk in chunks:
            yield chunk
    except StorageError as exc:
        logger.warning("%s", exc)

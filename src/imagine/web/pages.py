"""The routes of the browser pages and their files.

The pages are static files: everything they show comes from the API, fetched by their
scripts with the key (or admin token) the user pastes, which stays in the browser's
localStorage and only ever travels as an `Authorization: Bearer` header. With no cookie
there is nothing for another site to ride on (no CSRF), and the policy below keeps the
page from running anything but its own files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from imagine.errors import NotFound

STATIC = Path(__file__).parent / "static"

ASSETS = {
    "style.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
"""The files under /assets/, by name; nothing else in the folder is served."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        # Our own module files only: no inline script, no inline handler, no eval.
        "script-src 'self'",
        "style-src 'self'",
        # Results are our /files/... URLs, unless they live in a bucket with public URLs
        # (another origin, known only to the deployment), and an image-to-video task can
        # name any public image as its source. An image or a video can't run script, so
        # any http(s) origin may be shown; data: and blob: for what the page draws itself.
        "img-src 'self' data: blob: https: http:",
        "media-src 'self' data: blob: https: http:",
        # The API calls: this server only.
        "connect-src 'self'",
        "manifest-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        # The scripts write text with textContent and DOM calls, never HTML: with Trusted
        # Types required, a browser that knows them refuses every HTML string sink
        # (innerHTML and friends), so a slip would fail loudly instead of injecting.
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Always asked again (a 304 when unchanged), so a new version shows at once.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: str


@cache
def _read(name: str) -> _File:
    body = (STATIC / name).read_bytes()
    return _File(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, name: str, media_type: str, headers: dict[str, str]) -> Response:
    found = _read(name)
    headers = {**headers, "ETag": found.etag}
    if found.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=media_type, headers=headers)


@router.get("/")
async def playground(request: Request) -> Response:
    """Paste a key, make images and videos, watch them finish, browse your history."""
    return _serve(request, "playground.html", "text/html; charset=utf-8", _PAGE_HEADERS)


@router.get("/console")
async def console(request: Request) -> Response:
    """The operator console over the admin API (behind IMAGINE_ADMIN_TOKEN)."""
    return _serve(request, "console.html", "text/html; charset=utf-8", _PAGE_HEADERS)


@router.get("/assets/{name}")
async def asset(request: Request, name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"not found: /assets/{name}")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    return _serve(request, name, media_type, headers)

"""The interactive API docs, `/docs` (Swagger UI) and `/redoc` (ReDoc), with their scripts,
styles and icon served by this server: the pages work offline and on networks that can't
reach a CDN, and load nothing from anywhere else.

The files come from the `fastapi-offline` package (pinned in pyproject.toml), which ships
the builds of swagger-ui-dist and redoc that FastAPI's pages expect: the self-hosting
recipe of FastAPI's documentation ("Custom Docs UI Static Assets"), with the files updated
by a version bump instead of vendored into this repository. Only its static files are
used. tests/test_api_docs.py loads both pages in a browser that may reach nothing but
this server.

Each page carries a Content-Security-Policy that lets it load from this server only, so
that a browser enforces "nothing from elsewhere" too: ReDoc's menu shows Redocly's logo
from Redocly's CDN, which the policy turns away (the logo is then left out).
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")
"""The package and the folder in it that hold the files."""

SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"

SWAGGER_PARAMETERS = {
    # No badge that sends the document to swagger.io's online validator.
    "validatorUrl": None,
    # The operations' ids (generate, getStatus, ...) are what generated clients call.
    "displayOperationId": True,
}


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the two pages and their files; build `app` with `docs_url=None` and
    `redoc_url=None` so that FastAPI's own pages (which load from a CDN) are not there."""
    app.mount(ASSETS, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    title = app.title

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=root + str(app.openapi_url),
                title=f"{title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS}/{SWAGGER_JS}",
                swagger_css_url=f"{root}{ASSETS}/{SWAGGER_CSS}",
                swagger_favicon_url=f"{root}{ASSETS}/{FAVICON}",
                swagger_ui_parameters=SWAGGER_PARAMETERS,
            )
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return _with_policy(
            get_redoc_html(
                openapi_url=root + str(app.openapi_url),
                title=f"{title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS}/{REDOC_JS}",
                redoc_favicon_url=f"{root}{ASSETS}/{FAVICON}",
                with_google_fonts=False,
            )
        )


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """The page, allowed to load from this server only. The inline script that starts
    Swagger UI is allowed by its hash; both viewers style their elements inline and
    draw icons from data: URLs, and ReDoc runs its search in a worker made from a blob."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    page.headers["Content-Security-Policy"] = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' {hashes}".strip(),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return page


def _root(request: Request) -> str:
    """The path the app is mounted under (behind a proxy that strips a prefix), as
    FastAPI's own docs pages use it."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")

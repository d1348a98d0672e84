"""/docs (Swagger UI) and /redoc (ReDoc) work offline: their scripts, styles and icon come
from this server, and in a browser (Debian's chromium, driven by Playwright) that may
reach nothing else, both pages render the operations of the document, and Swagger UI's
"Try it out" calls the API.

Every request that leaves the browser for another host is aborted and recorded; none
may be made. The pages' Content-Security-Policy (api/docs.py) stops loads from elsewhere
in the browser already: the only one it may stop is ReDoc's Redocly logo, and anything
else it stops fails the test (a viewer that needs more than the policy allows is broken).
A failing page leaves a screenshot in the test's tmp_path (its path is in the message).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.support.api import http
from tests.support.server import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Route

CHROMIUM = "/usr/bin/chromium"
ASSETS = {
    "/docs/assets/swagger-ui-bundle.js": "javascript",
    "/docs/assets/swagger-ui.css": "text/css",
    "/docs/assets/redoc.standalone.js": "javascript",
    "/docs/assets/favicon.png": "image/png",
}
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""ReDoc's menu always shows it (redoc 2.x); the policy turns it away, ReDoc hides it."""
_BLOCKED = re.compile(r"^(?:Loading|Refused to load|Connecting to) (?:the \w+ )?'([^']+)'")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            raise AssertionError(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class OfflinePage:
    """A page whose requests to anything but `server` are aborted and recorded, as are
    the script errors it throws."""

    def __init__(self, browser: Browser, server: ServerProcess, shots: Path) -> None:
        self.context = browser.new_context()
        self.page: Page = self.context.new_page()
        self.origin = urlsplit(server.url).netloc
        self.elsewhere: list[str] = []
        self.errors: list[str] = []
        self.blocked: list[str] = []
        """What the page's Content-Security-Policy stopped."""
        self.shots = shots
        self.context.route("**/*", self._route)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            found = _BLOCKED.match(message.text)
            self.blocked.append(found.group(1) if found else message.text)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == self.origin or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.elsewhere.append(url)
            route.abort()

    def check(
        self,
        name: str,
        checks: Callable[[Page], None],
        *,
        may_block: frozenset[str] = frozenset(),
    ) -> None:
        """Run `checks`; on failure, a screenshot named `name` beside the error."""
        try:
            checks(self.page)
            assert self.elsewhere == [], f"requests beyond the server: {self.elsewhere}"
            assert self.errors == [], f"script errors: {self.errors}"
            assert set(self.blocked) <= may_block, f"refused by the policy: {self.blocked}"
        except Exception as exc:
            shot = self.shots / f"{name}.png"
            self.page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"{name}: {exc} (screenshot: {shot})") from exc

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Browser, server: ServerProcess, tmp_path: Path) -> Iterator[OfflinePage]:
    page = OfflinePage(browser, server, tmp_path)
    try:
        yield page
    finally:
        page.close()


def _operations(server: ServerProcess) -> list[dict[str, Any]]:
    document = http.get(f"{server.url}/openapi.json").json()
    return [
        operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_the_pages_and_their_files_are_served_here(server: ServerProcess) -> None:
    for path in ("/docs", "/redoc"):
        page = http.get(f"{server.url}{path}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text
        assert "https://" not in page.text
    for path, kind in ASSETS.items():
        answer = http.get(f"{server.url}{path}")
        assert answer.status_code == 200, path
        assert kind in answer.headers["content-type"], (path, answer.headers["content-type"])
        assert len(answer.content) > 1000, path


def test_swagger_ui_renders_every_operation_offline(
    server: ServerProcess, offline: OfflinePage
) -> None:
    operations = _operations(server)

    def checks(page: Page) -> None:
        page.goto(f"{server.url}/docs")
        generate = page.locator("#operations-generation-generate")
        generate.wait_for(timeout=60_000)
        assert "/api/generate" in generate.inner_text()
        assert "Create a generation task" in generate.inner_text()
        # One block per operation: every operation of the document has one tag.
        assert page.locator(".opblock").count() == len(operations)
        assert page.locator(".info .title").first.inner_text().startswith("imagine")
        # The security schemes are there to authorize with.
        assert page.locator("button.authorize").count() == 1
        # "Try it out" calls the API from the page (allowed by the policy: same origin).
        models = page.locator("#operations-models-listModels")
        models.locator(".opblock-summary").click()
        models.locator("button.try-out__btn").click()
        models.locator("button.execute").click()
        status = models.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=60_000)
        assert status.inner_text().strip() == "200"
        assert "grok-imagine/text-to-image" in models.locator(".live-responses-table").inner_text()

    offline.check("swagger-ui", checks)


def test_redoc_renders_every_operation_offline(server: ServerProcess, offline: OfflinePage) -> None:
    operations = _operations(server)

    def checks(page: Page) -> None:
        page.goto(f"{server.url}/redoc")
        generate = page.locator('[id="tag/generation/operation/generate"]')
        generate.wait_for(timeout=60_000)
        assert "Create a generation task" in generate.inner_text()
        assert page.locator("h1").first.inner_text().startswith("imagine")
        rendered = page.locator('[id^="tag/"][id*="/operation/"]')
        assert rendered.count() == len(operations)

    offline.check("redoc", checks, may_block=frozenset({REDOCLY_LOGO}))

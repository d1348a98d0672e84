"""Headless Chromium (Debian's, driven by Playwright) against real servers.

Every request that leaves the browser for a host other than the server under test is
aborted and recorded, and each check fails if there was one, if the page threw, or if
its Content-Security-Policy refused anything. A failing check leaves screenshots of the
page at 1280 and 390 px wide in the test's tmp_path (their paths are in the message).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.support.server import ADMIN_TOKEN

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route

CHROMIUM = "/usr/bin/chromium"
WIDTHS = (1280, 390)
_LOOPBACK = re.compile(r"^(127\.0\.0\.1|localhost)(:\d+)?$")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per module, not per session: Playwright's sync API keeps an event loop
    running in this thread while it is open, which other modules' asyncio.run can't share."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            raise AssertionError(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield launched
        finally:
            launched.close()


class Browsing:
    """One browser context (its own localStorage) whose requests may reach loopback
    servers only; `page()` opens tabs in it, `check()` runs steps and reports."""

    def __init__(self, browser: Browser, shots: Path) -> None:
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(30_000)
        self.elsewhere: list[str] = []
        self.errors: list[str] = []
        self.blocked: list[str] = []
        """What a page's Content-Security-Policy refused."""
        self.shots = shots
        self.pages: list[Page] = []
        self.context.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or _LOOPBACK.match(urlsplit(url).netloc):
            route.continue_()
        else:
            self.elsewhere.append(url)
            route.abort()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.blocked.append(message.text)

    def page(self, url: str) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.goto(url)
        self.pages.append(page)
        return page

    def check(self, name: str, steps: Callable[[], None]) -> None:
        try:
            steps()
            assert self.elsewhere == [], f"requests beyond the servers: {self.elsewhere}"
            assert self.errors == [], f"script errors: {self.errors}"
            assert self.blocked == [], f"refused by the policy: {self.blocked}"
        except Exception as exc:
            saved = self.screenshots(name)
            raise AssertionError(f"{name}: {exc} (screenshots: {', '.join(saved)})") from exc

    def screenshots(self, name: str) -> list[str]:
        saved = []
        for number, page in enumerate(self.pages):
            if page.is_closed():
                continue
            for width in WIDTHS:
                path = self.shots / f"{name}-{number}-{width}.png"
                try:
                    page.set_viewport_size({"width": width, "height": 900})
                    page.screenshot(path=str(path), full_page=True)
                except Exception as exc:  # a screenshot must not hide the failure
                    saved.append(f"{path} failed: {exc}")
                else:
                    saved.append(str(path))
            page.set_viewport_size({"width": 1280, "height": 900})
        return saved

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browsing(browser: Browser, tmp_path: Path) -> Iterator[Browsing]:
    session = Browsing(browser, tmp_path)
    try:
        yield session
    finally:
        session.close()


def use_key(page: Page, key: str) -> None:
    """Paste `key` in the playground's key form and submit it with the keyboard."""
    page.locator("#key-input").fill(key)
    page.locator("#key-input").press("Enter")
    page.locator("#key-saved").wait_for()


def use_admin_token(page: Page, token: str = ADMIN_TOKEN) -> None:
    page.locator("#token-input").fill(token)
    page.locator("#token-input").press("Enter")
    page.locator("#console").wait_for()

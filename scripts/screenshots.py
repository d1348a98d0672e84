"""Capture the browser pages for the README: docs/screenshots/{playground,console}-{1280,390}.png.

    .venv/bin/python scripts/screenshots.py                # write the four PNGs
    .venv/bin/python scripts/screenshots.py --out /tmp/s   # somewhere else

Starts `imagine serve` on a loopback port with a fresh data dir (preview engine), makes
a key and a few tasks (images, an upscale, a video, one failure and one failed webhook),
then opens `/` and `/console` in headless Chromium (Debian's `/usr/bin/chromium`, or
`--chromium PATH`) at 1280 and 390 px wide. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "screenshots-admin-token"
WIDTHS = {1280: 900, 390: 844}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data_dir:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = _serve(port, Path(data_dir))
        try:
            _wait_healthy(url)
            key = _fill_in(url)
            _capture(url, key, args.out, args.chromium)
        finally:
            server.terminate()
            server.wait(timeout=30)
    for name in sorted(args.out.glob("*.png")):
        print(name.relative_to(ROOT) if name.is_relative_to(ROOT) else name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IMAGINE_ADMIN_TOKEN": ADMIN_TOKEN,
        "IMAGINE_PREVIEW_DELAY": "0.5",
        "IMAGINE_LOG_LEVEL": "warning",
        "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "0.5s",
        "IMAGINE_ALLOW_PRIVATE_URLS": "true",
    }
    command = [sys.executable, "-m", "imagine", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--no-access-log"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not start")


def _fill_in(url: str) -> str:
    """A key with some history: images, an upscale, videos, a failure, a failed webhook."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = httpx.post(
        f"{url}/admin/keys", json={"name": "studio", "credits": 500}, headers=admin
    ).json()["data"]
    httpx.post(f"{url}/admin/keys", json={"name": "ci", "credits": 50}, headers=admin)
    key: str = created["key"]
    headers = {"Authorization": f"Bearer {key}"}

    def run(body: dict[str, Any]) -> str:
        answer = httpx.post(f"{url}/api/generate", json=body, headers=headers, timeout=30)
        answer.raise_for_status()
        task_id: str = answer.json()["data"]["task_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/api/status", params={"task_id": task_id}, headers=headers)
            if status.json()["data"]["status"] != "IN_PROGRESS":
                return task_id
            time.sleep(0.2)
        raise SystemExit(f"task {task_id} did not finish")

    image = {"model": "grok-imagine/text-to-image"}
    video = {"model": "grok-imagine/text-to-video"}
    run({**video, "input": {"prompt": "waves rolling in at dusk", "aspect_ratio": "16:9"}})
    run({"model": "grok-imagine/image-to-video", "input": {"image_urls": [f"{url}/openapi.json"]}})
    run(
        {
            **image,
            "input": {"prompt": "a paper boat on a puddle"},
            "callback_url": "http://127.0.0.1:9/hook",
        }
    )
    fox = run({**image, "input": {"prompt": "a fox in fresh snow", "aspect_ratio": "1:1"}})
    run({"model": "grok-imagine/upscale", "input": {"task_id": fox}})
    run(
        {
            **image,
            "input": {"prompt": "a lighthouse at dawn, waves on the rocks", "aspect_ratio": "3:2"},
            "public": True,
        }
    )
    time.sleep(2)  # the webhook to nowhere: its two tries fail
    return key


def _capture(url: str, key: str, out: Path, chromium: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for width, height in WIDTHS.items():
                context = browser.new_context(viewport={"width": width, "height": height})
                context.route(
                    "**/*",
                    lambda route: (
                        route.continue_() if route.request.url.startswith(url) else route.abort()
                    ),
                )
                context.add_init_script(
                    f"localStorage.setItem('imagine.apiKey', {key!r});"
                    f"localStorage.setItem('imagine.adminToken', {ADMIN_TOKEN!r});"
                )
                page = context.new_page()
                page.goto(f"{url}/")
                page.locator('#task-view article.task[data-status="SUCCESS"] img').wait_for()
                _whole_page(page, out / f"playground-{width}.png")

                page.goto(f"{url}/console#tasks")
                page.locator('#tasks tr[data-status="FAILED"] button').first.click()
                page.locator("#task-body .facts").wait_for()
                page.evaluate("() => window.scrollTo(0, 0)")
                _whole_page(page, out / f"console-{width}.png")
                context.close()
        finally:
            browser.close()


def _whole_page(page: Page, path: Path) -> None:
    """The page at its whole height, drawn as a viewport that tall: a full-page capture of a
    short viewport leaves images below the fold undrawn (black) on a phone width."""
    viewport = page.viewport_size
    assert viewport is not None
    tall = page.evaluate("() => document.documentElement.scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": tall})
    _settle(page)
    page.screenshot(path=str(path))
    page.set_viewport_size(viewport)


def _settle(page: Page) -> None:
    """Every image decoded and every video at its first frame."""
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete)"
        " && [...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
        timeout=30_000,
    )
    page.wait_for_timeout(300)


if __name__ == "__main__":
    main()

"""The caller's task history and the public gallery: JSON pages, and the HTML page as a
browser shows it (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx
import pytest

from tests.support.api import auth, create_task, new_key, text_to_image, wait_done
from tests.support.server import ServerProcess

CHROMIUM = "/usr/bin/chromium"


def _get(server: ServerProcess, path: str, key: str | None = None, **params: str) -> Any:
    answer = httpx.get(f"{server.url}{path}", params=params, headers=auth(key) if key else {})
    return answer


def test_history_pages_newest_first_with_filters(server: ServerProcess, key: str) -> None:
    first = create_task(server.url, key, text_to_image("one"))
    video = create_task(
        server.url, key, {"model": "grok-imagine/text-to-video", "input": {"prompt": "two"}}
    )
    third = create_task(server.url, key, text_to_image("three"))
    for task_id in (first, video, third):
        wait_done(server.url, key, task_id)

    page = _get(server, "/api/tasks", key, limit="2").json()["data"]
    assert [item["task_id"] for item in page["items"]] == [third, video]
    assert page["items"][0]["status"] == "SUCCESS"
    assert set(page["items"][0]) >= {"request", "response", "consumed_credits", "created_at"}
    rest = _get(server, "/api/tasks", key, limit="2", cursor=page["next_cursor"]).json()["data"]
    assert [item["task_id"] for item in rest["items"]] == [first]
    assert rest["next_cursor"] is None

    images = _get(server, "/api/tasks", key, model="grok-imagine/text-to-image").json()["data"]
    assert [item["task_id"] for item in images["items"]] == [third, first]
    failed = _get(server, "/api/tasks", key, status="FAILED").json()["data"]
    assert failed == {"items": [], "next_cursor": None}

    other = new_key(server.url)["key"]
    assert _get(server, "/api/tasks", other).json()["data"]["items"] == []
    for params, field in (
        ({"cursor": "nonsense"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"9999-12-31T23:59:59-05:00|t1").decode()}, "cursor"),
        ({"status": "DONE"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"model": "paint"}, "model"),
    ):
        answer = _get(server, "/api/tasks", key, **params)
        assert answer.status_code == 422
        assert answer.json()["message"].startswith(f"{field}: ")
    assert _get(server, "/api/tasks").status_code == 401


def test_gallery_shows_public_tasks_only_and_nothing_about_owners(
    server: ServerProcess, key: str
) -> None:
    shown = create_task(
        server.url,
        key,
        {**text_to_image("a public fox"), "public": True, "callback_url": "https://example.com/x"},
    )
    hidden = create_task(server.url, key, text_to_image("a private fox"))
    for task_id in (shown, hidden):
        wait_done(server.url, key, task_id)

    items = _get(server, "/api/gallery", limit="100").json()["data"]["items"]
    ours = {item["task_id"]: item for item in items}
    assert hidden not in ours
    item = ours[shown]
    assert set(item) == {"task_id", "model", "prompt", "resultUrls", "created_at"}
    assert item["prompt"] == "a public fox"
    assert item["resultUrls"][0].startswith(f"{server.url}/files/")

    other = new_key(server.url)["key"]
    refused = httpx.delete(f"{server.url}/api/gallery/{shown}", headers=auth(other))
    assert refused.status_code == 404
    removed = httpx.delete(f"{server.url}/api/gallery/{shown}", headers=auth(key))
    assert removed.status_code == 200
    items = _get(server, "/api/gallery", limit="100").json()["data"]["items"]
    assert shown not in {item["task_id"] for item in items}


def test_the_gallery_page_in_a_browser(server: ServerProcess, key: str) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            raise AssertionError(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    shown = create_task(server.url, key, {**text_to_image("browser fox"), "public": True})
    hidden = create_task(server.url, key, text_to_image("secret fox"))
    video = create_task(
        server.url,
        key,
        {"model": "grok-imagine/text-to-video", "input": {"prompt": "moving"}, "public": True},
    )
    for task_id in (shown, hidden, video):
        wait_done(server.url, key, task_id)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/gallery")
            card = page.locator(f'figure[data-task-id="{shown}"]')
            assert card.count() == 1
            assert "browser fox" in card.inner_text()
            image = card.locator("img")
            image.wait_for()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
            )
            assert page.locator(f'figure[data-task-id="{hidden}"]').count() == 0
            assert "secret fox" not in page.content()
            assert page.locator(f'figure[data-task-id="{video}"] video').count() == 1
        finally:
            browser.close()


def test_lists_on_both_engines(engine_server: tuple[ServerProcess, Any]) -> None:
    server, _ = engine_server
    key = new_key(server.url)["key"]
    ids = [
        create_task(server.url, key, {**text_to_image(f"engine {n}"), "public": True})
        for n in range(3)
    ]
    for task_id in ids:
        wait_done(server.url, key, task_id)
    page = _get(server, "/api/tasks", key, limit="2", status="SUCCESS").json()["data"]
    assert [item["task_id"] for item in page["items"]] == ids[:0:-1]
    rest = _get(server, "/api/tasks", key, cursor=page["next_cursor"]).json()["data"]
    assert [item["task_id"] for item in rest["items"]] == ids[:1]
    gallery = _get(server, "/api/gallery", model="grok-imagine/text-to-image").json()["data"]
    assert [item["task_id"] for item in gallery["items"]][:3] == ids[::-1]
    hooks = _get(server, "/api/webhooks", key, task_id=ids[0])
    assert hooks.status_code == 200
    assert hooks.json()["data"] == []

"""The operator console at `/console`, over the admin API: keys made and revoked (and
used in the playground), credits granted, a failed task found by its filters, a failed
webhook delivery retried; and what it says when the admin API is off."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Browsing, use_admin_token, use_key
from tests.support.api import auth, create_task, http, new_key, text_to_image, wait_done
from tests.support.receiver import receiver
from tests.support.server import ADMIN_TOKEN, ServerProcess

WAIT = 60_000


@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Webhooks may go to a loopback receiver; a failing one is given up after one retry."""
    env = {"IMAGINE_ALLOW_PRIVATE_URLS": "true", "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "0.3s"}
    with ServerProcess(tmp_path_factory.mktemp("console"), env) as running:
        yield running


def _deliveries(server: ServerProcess, key: str, task_id: str) -> list[dict[str, Any]]:
    answer = http.get(f"{server.url}/api/webhooks", params={"task_id": task_id}, headers=auth(key))
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


def test_a_key_made_granted_and_revoked_in_the_console(
    browsing: Browsing, hooks_server: ServerProcess
) -> None:
    server = hooks_server

    def steps() -> None:
        console = browsing.page(f"{server.url}/console")
        use_admin_token(console)
        assert console.evaluate("() => localStorage.getItem('imagine.adminToken')") == ADMIN_TOKEN

        # The overview: the queue and the providers' health.
        expect(console.locator("#queue")).to_contain_text("Webhook backlog")
        provider = console.locator("#providers tr", has_text="preview")
        expect(provider).to_contain_text("ok")
        # The tabs answer the arrow keys.
        console.locator("#tab-overview").focus()
        console.keyboard.press("ArrowRight")
        expect(console.locator("#panel-accounts")).to_be_visible()
        console.keyboard.press("ArrowRight")
        expect(console.locator("#panel-keys")).to_be_visible()
        expect(console.locator("#tab-keys")).to_be_focused()
        assert console.url.endswith("#keys")

        console.locator("#key-name").fill("from the console")
        console.locator("#key-credits").fill("10")
        console.locator("#key-form button[type=submit]").click()
        shown = console.locator("#new-key-value")
        expect(shown).to_have_text(re.compile(r"^im_[A-Za-z0-9_-]{20,}$"))
        key = shown.inner_text()
        facts = console.locator("#new-key-facts").inner_text()
        account_id = next(word for word in facts.split() if word.startswith("acc_"))
        key_row = console.locator("#keys tr", has_text="from the console")
        expect(key_row).to_contain_text("active")

        # Shown once: dismissed, it is nowhere in the page.
        console.locator("#new-key-dismiss").click()
        assert key not in console.content()

        playground = browsing.page(f"{server.url}/")
        use_key(playground, key)
        expect(playground.locator("#balance")).to_have_attribute("data-balance", "10")

        console.bring_to_front()
        console.locator("#tab-accounts").click()
        console.locator(f'#accounts tr[data-account-id="{account_id}"] button').click()
        expect(console.locator("#account-detail")).to_be_visible()
        expect(console.locator("#grant-account")).to_have_value(account_id)
        console.locator("#grant-amount").fill("50")
        console.locator("#grant-note").fill("a browser grant")
        console.locator("#grant-form button[type=submit]").click()
        expect(console.locator("#grant-message")).to_contain_text(
            f"{account_id} now has 60 credits"
        )
        expect(console.locator(f'#accounts tr[data-account-id="{account_id}"]')).to_contain_text(
            "60"
        )
        expect(console.locator("#account-facts")).to_contain_text("60 credits")
        expect(console.locator("#ledger tr", has_text="a browser grant")).to_contain_text("+50")

        playground.bring_to_front()
        playground.reload()
        expect(playground.locator("#balance")).to_have_attribute("data-balance", "60")

        console.bring_to_front()
        console.locator("#tab-keys").click()
        key_row.get_by_role("button", name="Revoke").click()
        key_row.get_by_role("button", name="Yes, revoke").click()
        expect(key_row).to_contain_text("revoked")

        playground.bring_to_front()
        playground.locator("#prompt").fill("after the revocation")
        playground.locator("#submit").click()
        expect(playground.locator("#generate-error")).to_contain_text(
            "invalid API key: it is unknown or was revoked"
        )
        playground.reload()
        expect(playground.locator("#key-error")).to_contain_text("refused this key")

    browsing.check("key-lifecycle", steps)


def test_a_failed_task_found_by_its_filters(
    browsing: Browsing, hooks_server: ServerProcess
) -> None:
    server = hooks_server
    key = new_key(server.url, credits=100)["key"]
    ok = create_task(server.url, key, text_to_image("this one works"))
    # Not an image: the source is fetched, sniffed and refused, the task fails (refunded).
    failed = create_task(
        server.url,
        key,
        {
            "model": "grok-imagine/image-to-video",
            "input": {"image_urls": [f"{server.url}/openapi.json"]},
        },
    )
    assert wait_done(server.url, key, ok)["status"] == "SUCCESS"
    assert wait_done(server.url, key, failed)["status"] == "FAILED"

    def steps() -> None:
        console = browsing.page(f"{server.url}/console#tasks")
        use_admin_token(console)
        expect(console.locator("#panel-tasks")).to_be_visible()
        expect(console.locator(f'#tasks tr[data-task-id="{ok}"]')).to_be_visible()
        console.locator("#task-status").select_option("FAILED")
        expect(console.locator(f'#tasks tr[data-task-id="{ok}"]')).to_have_count(0)
        row = console.locator(f'#tasks tr[data-task-id="{failed}"]')
        expect(row).to_contain_text("not a PNG, JPEG or WebP image")
        console.locator("#task-model").select_option("grok-imagine/image-to-video")
        console.locator("#task-provider").select_option("preview")
        console.locator("#task-age").select_option("after:3600")
        expect(row).to_be_visible()
        expect(row).to_contain_text("refunded")
        console.locator("#task-age").select_option("before:3600")
        expect(row).to_have_count(0)
        expect(console.locator("#tasks")).to_contain_text("No task matches these filters.")
        console.locator("#task-age").select_option("")
        row.locator("button").first.click()
        detail = console.locator("#task-detail")
        expect(detail).to_contain_text(failed)
        expect(detail).to_contain_text("not a PNG, JPEG or WebP image")
        expect(detail).to_contain_text("Provider state")

    browsing.check("failed-task", steps)


def test_a_failed_delivery_retried_from_the_console(
    browsing: Browsing, hooks_server: ServerProcess
) -> None:
    server = hooks_server
    key = new_key(server.url, credits=100)["key"]
    with receiver(answers=(500, 500, 200)) as hook:
        task_id = create_task(
            server.url, key, {**text_to_image("hooked"), "callback_url": hook.url}
        )
        deadline = time.monotonic() + 60
        while not [d for d in _deliveries(server, key, task_id) if d["status"] == "failed"]:
            assert time.monotonic() < deadline, _deliveries(server, key, task_id)
            time.sleep(0.2)
        assert [r.answered for r in hook.received] == [500, 500]

        def steps() -> None:
            console = browsing.page(f"{server.url}/console#webhooks")
            use_admin_token(console)
            console.locator("#delivery-task").fill(task_id)
            console.locator("#delivery-task").press("Enter")
            row = console.locator("#deliveries tbody tr")
            expect(row).to_have_count(1)
            expect(row).to_have_attribute("data-status", "failed")
            expect(row).to_contain_text("HTTP 500")
            row.get_by_role("button", name="Retry").click()
            expect(row).to_have_attribute("data-status", "delivered", timeout=WAIT)
            expect(row).to_contain_text("HTTP 200")

        browsing.check("retry-delivery", steps)
        assert [r.answered for r in hook.received] == [500, 500, 200]


def test_the_console_says_when_the_admin_api_is_off(
    browsing: Browsing, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with ServerProcess(tmp_path_factory.mktemp("no-admin"), {"IMAGINE_ADMIN_TOKEN": ""}) as server:

        def steps() -> None:
            console = browsing.page(f"{server.url}/console")
            off = console.locator("#off")
            expect(off).to_be_visible()
            expect(off).to_contain_text("IMAGINE_ADMIN_TOKEN")
            expect(off).to_contain_text("the admin API is off")
            expect(console.locator("#token-panel")).to_be_hidden()
            expect(console.locator("#console")).to_be_hidden()

        browsing.check("admin-off", steps)

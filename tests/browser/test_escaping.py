"""What users type is shown as text wherever the pages show it, and never runs: a prompt
made of markup and quotes appears literally in the playground's history and detail and
in the console's task list and detail, and none of its script or handlers execute."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Browsing, use_admin_token, use_key
from tests.support.api import create_task, new_key, text_to_image, wait_done
from tests.support.server import ServerProcess

HOSTILE = (
    "<script>window.__pwned=1</script>\"'><img src=x onerror=window.__pwned=2>"
    "<b>bold</b> & {{7*7}} ${7*7}"
)


def _nothing_ran(page: Page) -> None:
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    # No element came from the prompt: no <img src=x>, no <b>, no extra <script>.
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("b").count() == 0
    assert page.locator("script:not([src])").count() == 0


def test_a_hostile_prompt_is_only_text(browsing: Browsing, server: ServerProcess) -> None:
    key = new_key(server.url, credits=100)["key"]
    task_id = create_task(server.url, key, text_to_image(HOSTILE))
    wait_done(server.url, key, task_id)

    def steps() -> None:
        playground = browsing.page(f"{server.url}/")
        use_key(playground, key)
        row = playground.locator(f'#history-list .task-row[data-task-id="{task_id}"]')
        expect(row.locator(".row-prompt")).to_have_text(HOSTILE)
        row.click()
        shown = playground.locator(f'#task-view article[data-task-id="{task_id}"]')
        expect(shown.locator(".prompt")).to_have_text(HOSTILE)
        image = shown.locator(".results img")
        expect(image).to_have_attribute("alt", HOSTILE)
        shown.locator("summary").click()
        expect(shown.locator("pre")).to_contain_text(HOSTILE.replace('"', '\\"'))
        _nothing_ran(playground)

        console = browsing.page(f"{server.url}/console#tasks")
        use_admin_token(console)
        task_row = console.locator(f'#tasks tr[data-task-id="{task_id}"]')
        expect(task_row.locator(".prompt-cell")).to_have_text(HOSTILE)
        task_row.locator("button").first.click()
        detail = console.locator("#task-body")
        expect(detail.locator(".prompt")).to_have_text(HOSTILE)
        _nothing_ran(console)
        _nothing_ran(playground)

    browsing.check("hostile-prompt", steps)

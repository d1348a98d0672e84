"""The playground at `/`, used as a person would: paste a key, make an image, chain an
upscale, make a video and watch it play, run out of credits, get a refund."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Browsing, use_key
from tests.support.api import new_key
from tests.support.server import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

WAIT = 60_000
"""Milliseconds to wait for a task to finish (generous: the machine may be busy)."""


def shown_task(page: Page, status: str = "SUCCESS") -> Locator:
    article = page.locator(f'#task-view article.task[data-status="{status}"]')
    expect(article).to_be_visible(timeout=WAIT)
    return article


def loaded_image(page: Page, article: Locator) -> int:
    """Waits for the result image to be decoded; answers its natural width."""
    image = article.locator(".results img").first
    expect(image).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=WAIT
    )
    width: int = image.evaluate("img => img.naturalWidth")
    return width


def test_an_image_then_its_upscale(browsing: Browsing, server: ServerProcess) -> None:
    key = new_key(server.url, credits=100)["key"]

    def steps() -> None:
        page = browsing.page(f"{server.url}/")
        use_key(page, key)
        balance = page.locator("#balance")
        expect(balance).to_have_attribute("data-balance", "100")
        assert page.evaluate("() => localStorage.getItem('imagine.apiKey')") == key
        assert key not in page.url

        expect(page.locator("#model")).to_have_value("grok-imagine/text-to-image")
        expect(page.locator("#model option").first).to_contain_text("5 credits")
        expect(page.locator("#model-info")).to_contain_text("Preview engine")
        page.locator("#prompt").fill("a lighthouse at dawn")
        page.locator("#option-aspect_ratio").select_option("16:9")
        page.locator("#submit").click()
        expect(balance).to_have_attribute("data-balance", "95")
        image_task = shown_task(page)
        expect(image_task.locator(".prompt")).to_have_text("a lighthouse at dawn")
        width = loaded_image(page, image_task)
        source_id = image_task.get_attribute("data-task-id")
        assert source_id
        download = image_task.locator("a[download]")
        assert "/files/" in (download.get_attribute("href") or "")
        expect(page.locator("#history-list .task-row")).to_have_count(1)

        image_task.locator('[data-chain="grok-imagine/upscale"]').click()
        expect(balance).to_have_attribute("data-balance", "83")
        upscaled = page.locator('#task-view article.task[data-status="SUCCESS"]').filter(
            has=page.locator("h3", has_text="upscale")
        )
        expect(upscaled).to_be_visible(timeout=WAIT)
        assert loaded_image(page, upscaled) == 2 * width
        expect(upscaled.locator(".facts")).to_contain_text(source_id)
        expect(page.locator("#history-list .task-row")).to_have_count(2)

        # The history, filtered by model.
        page.locator("#history-model").select_option("grok-imagine/upscale")
        expect(page.locator("#history-list .task-row")).to_have_count(1)
        page.locator("#history-model").select_option("")
        expect(page.locator("#history-list .task-row")).to_have_count(2)

        # Forget the key: gone from storage and from the page.
        page.locator("#forget-key").click()
        assert page.evaluate("() => localStorage.getItem('imagine.apiKey')") is None
        expect(page.locator("#key-form")).to_be_visible()
        expect(page.locator("#history-list .task-row")).to_have_count(0)

    browsing.check("image-then-upscale", steps)


def test_a_video_loads_and_plays(browsing: Browsing, server: ServerProcess) -> None:
    key = new_key(server.url, credits=100)["key"]

    def steps() -> None:
        page = browsing.page(f"{server.url}/")
        use_key(page, key)
        page.locator("#model").select_option("grok-imagine/text-to-video")
        expect(page.locator("#submit")).to_contain_text("24 credits")
        expect(page.locator("#option-duration")).to_be_visible()
        page.locator("#prompt").fill("waves at dusk")
        page.locator("#submit").click()
        expect(page.locator("#balance")).to_have_attribute("data-balance", "76")
        video = shown_task(page).locator(".results video")
        expect(video).to_be_visible()
        page.wait_for_function(
            "v => v.readyState >= 2 && v.currentTime > 0 && !v.paused",
            arg=video.element_handle(),
            timeout=WAIT,
        )
        assert video.evaluate("v => v.videoWidth") > 0

    browsing.check("video-plays", steps)


def test_short_of_credits_shows_what_the_api_says(
    browsing: Browsing, server: ServerProcess
) -> None:
    key = new_key(server.url, credits=4)["key"]

    def steps() -> None:
        page = browsing.page(f"{server.url}/")
        use_key(page, key)
        expect(page.locator("#balance")).to_have_attribute("data-balance", "4")
        page.locator("#prompt").fill("a fox")
        page.locator("#submit").click()
        message = page.locator("#generate-error")
        expect(message).to_contain_text(
            "insufficient credits: grok-imagine/text-to-image costs 5 and the balance is 4"
        )
        expect(message).to_contain_text("1 credit missing")
        expect(page.locator("#history-list .task-row")).to_have_count(0)

    browsing.check("short-of-credits", steps)


def test_errors_of_the_api_are_shown_as_it_says_them(
    browsing: Browsing, server: ServerProcess
) -> None:
    key = new_key(server.url, credits=100)["key"]

    def steps() -> None:
        page = browsing.page(f"{server.url}/")
        use_key(page, key)
        # A prompt-less video: the API names the field.
        page.locator("#model").select_option("grok-imagine/text-to-video")
        page.locator("#submit").click()
        expect(page.locator("#generate-error")).to_contain_text(
            "input.prompt: required for grok-imagine/text-to-video"
        )
        # A key the server doesn't know.
        page.locator("#forget-key").click()
        use_key(page, "im_not_a_real_key_at_all_000000000000")
        expect(page.locator("#key-error")).to_contain_text(
            "invalid API key: it is unknown or was revoked"
        )

    browsing.check("api-errors", steps)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Tasks that never finish on their own: each fails at its deadline, refunded."""
    env = {"IMAGINE_TASK_DEADLINE": "4", "IMAGINE_PREVIEW_DELAY": "600"}
    with ServerProcess(tmp_path_factory.mktemp("slow"), env) as running:
        yield running


def test_a_refunded_failure_gives_the_balance_back(
    browsing: Browsing, slow_server: ServerProcess
) -> None:
    key = new_key(slow_server.url, credits=100)["key"]

    def steps() -> None:
        page = browsing.page(f"{slow_server.url}/")
        use_key(page, key)
        balance = page.locator("#balance")
        expect(balance).to_have_attribute("data-balance", "100")
        # Every balance the page shows, in order.
        page.evaluate(
            """() => {
              const node = document.getElementById("balance");
              window.__balances = [];
              new MutationObserver(() => window.__balances.push(node.dataset.balance))
                .observe(node, { attributes: true, attributeFilter: ["data-balance"] });
            }"""
        )
        page.locator("#prompt").fill("too slow")
        page.locator("#submit").click()
        running = shown_task(page, "IN_PROGRESS")
        expect(running.locator(".elapsed")).to_contain_text("elapsed")
        expect(running.locator("progress")).to_be_visible()

        failed = shown_task(page, "FAILED")
        expect(failed).to_contain_text("the task did not finish within 4")
        expect(failed).to_contain_text("came back to your balance")
        expect(balance).to_have_attribute("data-balance", "100")
        shown: list[str] = page.evaluate("() => window.__balances")
        assert [value for n, value in enumerate(shown) if n == 0 or shown[n - 1] != value] == [
            "95",
            "100",
        ]

    browsing.check("refund", steps)

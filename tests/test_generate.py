"""POST /api/generate: every field and error of the API document, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import (
    auth,
    balance,
    create_task,
    generate,
    new_key,
    text_to_image,
    wait_done,
)
from tests.support.server import ServerProcess


def assert_error(answer: httpx.Response, code: int, *words: str) -> None:
    assert answer.status_code == code, answer.text
    body = answer.json()
    assert body["code"] == code
    assert body["data"] is None
    for word in words:
        assert word in body["message"], body["message"]


def test_sample_request_answers_like_the_document(server: ServerProcess, key: str) -> None:
    answer = generate(server.url, key, text_to_image())
    assert answer.status_code == 200
    body = answer.json()
    assert body["code"] == 200
    assert body["message"] == "success"
    assert set(body["data"]) == {"task_id", "status"}
    assert body["data"]["status"] == "IN_PROGRESS"
    assert isinstance(body["data"]["task_id"], str)


def test_model_defaults_to_text_to_image(server: ServerProcess, key: str) -> None:
    task_id = create_task(server.url, key, {"input": {"prompt": "a quiet lake"}})
    data = wait_done(server.url, key, task_id)
    assert data["request"]["model"] == "grok-imagine/text-to-image"
    assert data["consumed_credits"] == 5


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("grok-imagine/text-to-image", 5),
        ("grok-imagine/text-to-video", 24),
    ],
)
def test_credits_are_deducted_when_the_task_is_created(
    server: ServerProcess, model: str, price: int
) -> None:
    key = new_key(server.url, credits=100)["key"]
    create_task(server.url, key, {"model": model, "input": {"prompt": "a fox"}})
    assert balance(server.url, key) == 100 - price


class TestMissingKey:
    def test_no_header(self, server: ServerProcess) -> None:
        answer = httpx.post(f"{server.url}/api/generate", json=text_to_image())
        assert_error(answer, 401, "Authorization: Bearer")

    def test_unknown_key(self, server: ServerProcess) -> None:
        answer = generate(server.url, "im_not-a-real-key", text_to_image())
        assert_error(answer, 401, "invalid API key")

    def test_wrong_scheme(self, server: ServerProcess, key: str) -> None:
        answer = httpx.post(
            f"{server.url}/api/generate", json=text_to_image(), headers={"Authorization": key}
        )
        assert_error(answer, 401)

    def test_auth_comes_before_the_body(self, server: ServerProcess) -> None:
        answer = httpx.post(f"{server.url}/api/generate", content=b"{not json")
        assert_error(answer, 401)

    @pytest.mark.parametrize(
        ("body", "headers"),
        [
            (b"{not json", {}),
            (b'{"model": "grok-imagine/nope", "input": {"prompt": "x"}}', {}),
            (b'{"input": {"prompt": "x"}, "callback_url": "ftp://x"}', {}),
            (b'{"input": {"prompt": "x"}}', {"Idempotency-Key": "k" * 201}),
            (b'{"model": "grok-imagine/upscale", "input": {"task_id": "task_nope"}}', {}),
        ],
        ids=["malformed", "unknown-model", "callback-url", "idempotency-key", "source-task"],
    )
    def test_an_unknown_key_is_told_before_anything_wrong_with_the_request(
        self, server: ServerProcess, body: bytes, headers: dict[str, str]
    ) -> None:
        # The key is checked in the create itself; a request that goes no further must
        # still say the key is wrong first.
        answer = httpx.post(
            f"{server.url}/api/generate",
            content=body,
            headers={"Authorization": "Bearer im_not-a-real-key", **headers},
        )
        assert_error(answer, 401, "invalid API key")


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "code", "field"),
        [
            ({}, 422, "input: required"),
            ({"input": "a dragon"}, 422, "input: must be a JSON object"),
            ({"input": {}}, 422, "input.prompt: required"),
            ({"input": {"prompt": "   "}}, 422, "input.prompt: required"),
            ({"input": {"prompt": 5}}, 422, "input.prompt"),
            ({"input": {"prompt": "x" * 5001}}, 422, "input.prompt"),
            ({"model": "grok-imagine/nope", "input": {"prompt": "x"}}, 422, "model: unknown"),
            ({"model": 7, "input": {"prompt": "x"}}, 422, "model"),
            ({"input": {"prompt": "x"}, "public": "yes"}, 422, "public"),
            ({"input": {"prompt": "x"}, "callback_url": "ftp://x"}, 422, "callback_url"),
            ({"input": {"prompt": "x"}, "callback_url": 3}, 422, "callback_url"),
            ({"input": {"prompt": "x", "colour": "red"}}, 422, "input.colour: unknown field"),
            ({"input": {"prompt": "x"}, "callBackUrl": "https://a.b"}, 422, "callBackUrl"),
            (
                {"model": "grok-imagine/text-to-video", "input": {}},
                422,
                "input.prompt: required for grok-imagine/text-to-video",
            ),
            (
                {"model": "grok-imagine/image-to-video", "input": {"prompt": "x"}},
                422,
                "input.image_urls: required",
            ),
            (
                {"model": "grok-imagine/image-to-video", "input": {"image_urls": []}},
                422,
                "input.image_urls",
            ),
            (
                {
                    "model": "grok-imagine/image-to-video",
                    "input": {"image_urls": ["https://example.com/a.png"], "task_id": "t1"},
                },
                422,
                "not both",
            ),
            (
                {
                    "model": "grok-imagine/image-to-video",
                    "input": {"image_urls": ["https://a.com/1.png", "https://a.com/2.png"]},
                },
                422,
                "input.image_urls",
            ),
            (
                {"model": "grok-imagine/image-to-video", "input": {"image_urls": ["file:///etc"]}},
                422,
                "input.image_urls[0]: must be an http:// or https:// URL",
            ),
            (
                {"model": "grok-imagine/image-to-video", "input": {"image_urls": [5]}},
                422,
                "input.image_urls[0]",
            ),
            (
                {
                    "model": "grok-imagine/image-to-video",
                    "input": {"image_urls": ["http://169.254.169.254/latest"]},
                },
                400,
                "private or reserved",
            ),
            ({"model": "grok-imagine/upscale", "input": {}}, 422, "input.task_id: required"),
            (
                {"model": "grok-imagine/upscale", "input": {"task_id": "tmissing"}},
                422,
                "input.task_id: no task tmissing",
            ),
            (
                {"input": {"prompt": "x", "image_urls": ["https://a.com/x.png"]}},
                422,
                "input.image_urls: not used",
            ),
        ],
    )
    def test_is_refused_naming_the_field(
        self, server: ServerProcess, key: str, body: dict[str, Any], code: int, field: str
    ) -> None:
        before = balance(server.url, key)
        assert_error(generate(server.url, key, body), code, field)
        assert balance(server.url, key) == before

    def test_prompt_of_exactly_5000_characters_is_accepted(
        self, server: ServerProcess, key: str
    ) -> None:
        answer = generate(server.url, key, {"input": {"prompt": "y" * 5000}})
        assert answer.status_code == 200, answer.text

    def test_body_that_is_not_json(self, server: ServerProcess, key: str) -> None:
        answer = httpx.post(f"{server.url}/api/generate", content=b"{oops", headers=auth(key))
        assert_error(answer, 400, "not valid JSON")

    def test_empty_body(self, server: ServerProcess, key: str) -> None:
        answer = httpx.post(f"{server.url}/api/generate", headers=auth(key))
        assert_error(answer, 400, "empty")

    def test_json_that_is_not_an_object(self, server: ServerProcess, key: str) -> None:
        answer = httpx.post(f"{server.url}/api/generate", json=[1, 2], headers=auth(key))
        assert answer.status_code == 422
        assert answer.json()["data"] is None

    def test_body_too_large(self, server: ServerProcess, key: str) -> None:
        huge = b'{"input":{"prompt":"' + b"x" * 200_000 + b'"}}'
        answer = httpx.post(f"{server.url}/api/generate", content=huge, headers=auth(key))
        assert_error(answer, 413, "too large")

    def test_body_too_large_without_content_length(self, server: ServerProcess, key: str) -> None:
        def chunks() -> Any:
            yield b'{"input":{"prompt":"'
            for _ in range(100):
                yield b"x" * 10_000
            yield b'"}}'

        answer = httpx.post(f"{server.url}/api/generate", content=chunks(), headers=auth(key))
        assert_error(answer, 413, "too large")

    def test_headers_too_large(self, server: ServerProcess, key: str) -> None:
        headers = {**auth(key), "X-Padding": "x" * 20_000}
        answer = httpx.post(f"{server.url}/api/generate", json={}, headers=headers)
        assert_error(answer, 431, "headers too large")
        long_url = f"{server.url}/api/status?task_id={'t' * 20_000}"
        assert_error(httpx.get(long_url, headers=auth(key)), 431, "headers too large")


class TestInsufficientCredits:
    def test_402_and_nothing_is_created(self, server: ServerProcess) -> None:
        key = new_key(server.url, credits=4)["key"]
        assert_error(generate(server.url, key, text_to_image()), 402, "costs 5", "balance is 4")
        assert balance(server.url, key) == 4

    def test_balance_spent_exactly_to_zero(self, server: ServerProcess) -> None:
        key = new_key(server.url, credits=10)["key"]
        create_task(server.url, key, text_to_image())
        create_task(server.url, key, text_to_image())
        assert balance(server.url, key) == 0
        assert_error(generate(server.url, key, text_to_image()), 402)


class TestSourceTask:
    def test_other_accounts_task_is_not_found(self, server: ServerProcess, key: str) -> None:
        other = new_key(server.url)["key"]
        source = create_task(server.url, other, text_to_image())
        wait_done(server.url, other, source)
        answer = generate(
            server.url, key, {"model": "grok-imagine/upscale", "input": {"task_id": source}}
        )
        assert_error(answer, 422, f"no task {source}")

    def test_video_task_cannot_be_upscaled(self, server: ServerProcess, key: str) -> None:
        video = create_task(
            server.url, key, {"model": "grok-imagine/text-to-video", "input": {"prompt": "a"}}
        )
        wait_done(server.url, key, video)
        answer = generate(
            server.url, key, {"model": "grok-imagine/upscale", "input": {"task_id": video}}
        )
        assert_error(answer, 422, "made a video")

    def test_unfinished_task_cannot_be_upscaled(self, make_server: Any) -> None:
        slow = make_server({"IMAGINE_PREVIEW_DELAY": "30"})
        key = new_key(slow.url)["key"]
        source = create_task(slow.url, key, text_to_image())
        answer = generate(
            slow.url, key, {"model": "grok-imagine/upscale", "input": {"task_id": source}}
        )
        assert_error(answer, 422, "IN_PROGRESS", "SUCCESS")

"""Each error answer of the real server becomes its typed exception, with the envelope."""

from __future__ import annotations

import pytest

from imagine.client import (
    AuthenticationError,
    Client,
    Conflict,
    ConnectionFailed,
    ImagineError,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    TaskFailed,
    WaitTimeout,
)
from tests.client.conftest import SLOW_DEADLINE
from tests.support.api import new_key
from tests.support.server import ServerProcess, free_port


def test_a_bad_key_is_an_authentication_error(server: ServerProcess) -> None:
    with Client(api_key="im_not-a-key", base_url=server.url) as client:
        with pytest.raises(AuthenticationError) as raised:
            client.balance()
        with pytest.raises(AuthenticationError):
            client.generate("a cat")
    error = raised.value
    assert error.status_code == 401
    assert error.code == 401
    assert error.message
    assert error.envelope == {"code": 401, "message": error.message, "data": None}
    assert '"code":401' in (error.body or "").replace(" ", "")
    assert error.headers["content-type"] == "application/json"
    assert error.attempts == 1
    assert isinstance(error, ImagineError)
    assert str(error) == f"401: {error.message}"


def test_no_key_at_all_is_an_authentication_error(server: ServerProcess) -> None:
    with Client(base_url=server.url) as client:
        assert client.models()  # needs no key
        with pytest.raises(AuthenticationError):
            client.status("t0")


def test_too_few_credits(server: ServerProcess) -> None:
    key = new_key(server.url, credits=4)["key"]
    with Client(api_key=key, base_url=server.url) as client:
        with pytest.raises(InsufficientCredits) as raised:
            client.generate("a cat")
        assert raised.value.status_code == 402
        assert client.balance() == 4
        assert list(client.tasks()) == []


def test_an_unknown_task_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as raised:
        client.status("t0123456789abcdef")
    assert raised.value.status_code == 404
    with pytest.raises(NotFound):
        client.cancel("t0123456789abcdef")


def test_bad_input_is_an_invalid_request(client: Client) -> None:
    with pytest.raises(InvalidRequest) as missing:
        client.generate(model="text-to-video")  # no prompt
    assert missing.value.status_code == 422
    assert missing.value.message.startswith("input.prompt: ")
    with pytest.raises(InvalidRequest) as bad_option:
        client.generate("a cat", options={"aspect_ratio": "7:5"})
    assert bad_option.value.status_code == 422
    assert "aspect_ratio" in bad_option.value.message
    with pytest.raises(InvalidRequest) as private:
        client.generate(model="image-to-video", image_urls="http://127.0.0.1/cat.png")
    assert private.value.status_code == 400
    with pytest.raises(ValueError, match="prompt"):
        client.generate("a cat", options={"prompt": "a dog"})


def test_cancelling_an_ended_task_is_a_conflict(client: Client) -> None:
    task = client.run("done already")
    with pytest.raises(Conflict) as raised:
        task.cancel()
    assert raised.value.status_code == 409


def test_a_task_that_fails_raises_task_failed_from_run(slow_server: ServerProcess) -> None:
    key = new_key(slow_server.url, credits=10)["key"]
    with Client(api_key=key, base_url=slow_server.url) as client:
        with pytest.raises(TaskFailed) as raised:
            client.run("never finishes", timeout=120)
        task = raised.value.task
        assert task.failed
        assert raised.value.error_message == (
            f"the task did not finish within {SLOW_DEADLINE} seconds"
        )
        assert task.consumed_credits == 0
        assert client.balance() == 10
        # wait() hands a FAILED task back; only run() raises.
        assert client.wait(task.task_id).failed
        with pytest.raises(TaskFailed):
            client.download(task.task_id)


def test_a_wait_that_runs_out_raises_wait_timeout(slow_server: ServerProcess) -> None:
    key = new_key(slow_server.url, credits=10)["key"]
    with Client(api_key=key, base_url=slow_server.url) as client:
        task = client.generate("slow")
        with pytest.raises(WaitTimeout) as raised:
            task.wait(timeout=0.5)
        assert raised.value.task.task_id == task.task_id
        assert raised.value.task.status == "IN_PROGRESS"
        with pytest.raises(WaitTimeout):
            client.generate("slow too", wait=True, timeout=0.5)
        with pytest.raises(ImagineError, match="wait for it first"):
            task.download()


def test_an_unreachable_server_is_a_connection_failure() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with (
        Client(api_key="im_x", base_url=nowhere, max_retries=1) as client,
        pytest.raises(ConnectionFailed) as raised,
    ):
        client.balance()
    assert raised.value.attempts == 2
    assert raised.value.status_code is None

"""The error policy of docs/providers.md, row by row, against the fake upstreams.

One server routes text-to-image to kie first and xAI second. Each row scripts kie's next
answers and checks what the task did: failed with a refund and a message the user can act
on, or retried (and where the row says so, moved to xAI) until it succeeded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api import balance, create_task, new_key, text_to_image, wait_done
from tests.support.fake_kie import FakeKie
from tests.support.fake_upstream import Answer
from tests.support.fake_xai import FakeXai
from tests.support.server import ServerProcess
from tests.support.upstreams import kie_env, metric, start_server, xai_env


@pytest.fixture(scope="module")
def kie() -> Iterator[FakeKie]:
    with FakeKie(task_seconds=0.2) as fake:
        yield fake


@pytest.fixture(scope="module")
def xai() -> Iterator[FakeXai]:
    with FakeXai(task_seconds=0.2) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    kie: FakeKie, xai: FakeXai, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        **kie_env(kie, IMAGINE_KIE_TIMEOUT="1"),
        **xai_env(xai),
        "IMAGINE_PROVIDER": "kie",
        "IMAGINE_ROUTES": "text-to-image=kie,xai",
        "IMAGINE_FAILOVER_AFTER": "3",
    }
    running = start_server(tmp_path_factory.mktemp("policy"), env)
    yield running
    running.stop()


@pytest.fixture
def key(server: ServerProcess) -> str:
    created: str = new_key(server.url, credits=100)["key"]
    return created


def _run(server: ServerProcess, key: str) -> dict[str, object]:
    task_id = create_task(server.url, key, text_to_image("policy row"))
    return wait_done(server.url, key, task_id, timeout=60)


@pytest.mark.parametrize(
    ("code", "words", "operator"),
    [
        (401, "refused this server's credentials", True),
        (403, "refused this server's credentials (upstream 403)", True),
        (402, "out of credits", True),
        (422, "rejected the input: prompt is not allowed", False),
        (505, "disabled at the provider: prompt is not allowed", False),
        (400, "the provider refused the task (400): prompt is not allowed", False),
    ],
)
@pytest.mark.parametrize("in_body", [False, True], ids=["http-status", "body-code"])
def test_final_submit_errors_fail_and_refund(
    server: ServerProcess,
    kie: FakeKie,
    xai: FakeXai,
    key: str,
    code: int,
    words: str,
    operator: bool,
    in_body: bool,
) -> None:
    # kie may put the error in the body `code` under HTTP 200; both mean the same.
    status = 200 if in_body else code
    kie.script("create", Answer(status=status, code=code, message="prompt is not allowed"))
    operator_errors = metric(server, "imagine_provider_operator_errors_total", provider="kie")
    xai_before = xai.calls["create"]

    done = _run(server, key)

    assert done["status"] == "FAILED"
    assert words in str(done["error_message"])
    assert done["consumed_credits"] == 0
    assert balance(server.url, key) == 100
    assert xai.calls["create"] == xai_before  # final errors never fail over
    after = metric(server, "imagine_provider_operator_errors_total", provider="kie")
    assert after == operator_errors + (1 if operator else 0)
    if operator:
        assert "provider kie needs the operator" in server.log()


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=429, message="Rate limit exceeded", retry_after=3),
        Answer(status=500, message="Server Error"),
        Answer(status=503, message="busy"),
        Answer(status=200, code=500, message="Server Error"),
        Answer(status=200, raw=b"<html>gateway hiccup</html>"),
        Answer(delay=2.0),  # longer than IMAGINE_KIE_TIMEOUT=1: a timeout
    ],
    ids=["429", "500", "503", "500-in-body", "malformed", "timeout"],
)
def test_transient_submit_errors_are_retried_on_the_same_route(
    server: ServerProcess, kie: FakeKie, xai: FakeXai, key: str, answer: Answer
) -> None:
    kie.script("create", answer)
    creates, xai_before = kie.calls["create"], xai.calls["create"]

    done = _run(server, key)

    assert done["status"] == "SUCCESS", done
    assert kie.calls["create"] == creates + 2
    assert xai.calls["create"] == xai_before
    assert balance(server.url, key) == 95
    if answer.retry_after is not None:
        first, second = kie.call_times["create"][-2:]
        assert second - first >= answer.retry_after - 0.1  # Retry-After was honoured


def test_transient_errors_move_to_the_next_route_after_the_retries(
    server: ServerProcess, kie: FakeKie, xai: FakeXai, key: str
) -> None:
    kie.script("create", *[Answer(status=502, message="bad gateway")] * 3)
    creates, xai_before = kie.calls["create"], xai.calls["create"]

    done = _run(server, key)

    assert done["status"] == "SUCCESS", done
    assert kie.calls["create"] == creates + 3
    assert xai.calls["create"] == xai_before + 1
    assert done["response"]["resultUrls"][0].startswith(f"{server.url}/files/")  # type: ignore[index]


def test_maintenance_455_fails_over_at_once(
    server: ServerProcess, kie: FakeKie, xai: FakeXai, key: str
) -> None:
    kie.script("create", Answer(status=455, message="Service Unavailable"))
    creates, xai_before = kie.calls["create"], xai.calls["create"]
    moved = metric(server, "imagine_failovers_total", from_provider="kie", to_provider="xai")

    done = _run(server, key)

    assert done["status"] == "SUCCESS", done
    assert kie.calls["create"] == creates + 1
    assert xai.calls["create"] == xai_before + 1
    after = metric(server, "imagine_failovers_total", from_provider="kie", to_provider="xai")
    assert after == moved + 1


def test_poll_errors_are_retried(server: ServerProcess, kie: FakeKie, key: str) -> None:
    kie.callbacks = False  # polling must do the work
    kie.script(
        "poll",
        Answer(status=429, message="Rate limit exceeded"),
        Answer(status=500, message="Server Error"),
        Answer(status=200, raw=b'{"code": 200, "data": {"state": "mystery"}}'),
        Answer(status=404, message="Task not found"),  # not visible yet, just created
    )
    try:
        assert _run(server, key)["status"] == "SUCCESS"
    finally:
        kie.callbacks = True
    assert not kie.scripts["poll"]  # all four were met, and survived


def test_an_upstream_fail_state_fails_with_its_reason(
    server: ServerProcess, kie: FakeKie, key: str
) -> None:
    kie.fail_next.append(("500", "Internal server error"))
    done = _run(server, key)
    assert done["status"] == "FAILED"
    assert done["error_message"] == (
        "the provider could not generate this: Internal server error (code 500)"
    )
    assert balance(server.url, key) == 100


def test_only_the_deadline_turns_transient_errors_into_a_refund(
    tmp_path: Path, kie: FakeKie
) -> None:
    env = kie_env(kie, IMAGINE_PROVIDER="kie", IMAGINE_TASK_DEADLINE="4")
    server = start_server(tmp_path / "deadline", env)
    try:
        key = new_key(server.url, credits=100)["key"]
        kie.script("create", *[Answer(status=500, message="down")] * 20)
        started = time.monotonic()
        done = _run(server, key)
        assert done["status"] == "FAILED"
        assert "did not finish within 4 seconds" in str(done["error_message"])
        assert balance(server.url, key) == 100
        assert time.monotonic() - started >= 3.5  # it kept trying until then
    finally:
        kie.scripts["create"].clear()
        server.stop()


class ResettingServer:
    """Accepts connections and resets them at once (RST), as a crashed upstream would."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            connection.close()

    def close(self) -> None:
        self.sock.close()


def test_connection_resets_are_retried_then_fail_over(tmp_path: Path, xai: FakeXai) -> None:
    resetting = ResettingServer()
    env = {
        "IMAGINE_PROVIDER": "kie",
        "IMAGINE_KIE_API_KEY": "k",
        "IMAGINE_KIE_BASE_URL": resetting.url,
        "IMAGINE_ROUTES": "text-to-image=kie,xai",
        "IMAGINE_FAILOVER_AFTER": "2",
        **xai_env(xai),
    }
    server = start_server(tmp_path / "reset", env)
    try:
        key = new_key(server.url, credits=100)["key"]
        before = xai.calls["create"]
        done = _run(server, key)
        assert done["status"] == "SUCCESS", done
        assert resetting.accepted >= 2
        assert xai.calls["create"] == before + 1
        assert "could not reach kie" in server.log()
    finally:
        server.stop()
        resetting.close()
        httpx.get(f"{xai.url}/v1/models")  # the shared fake is still fine


def test_routes_that_all_fail_are_not_hammered_in_turn(
    server: ServerProcess, kie: FakeKie, xai: FakeXai, key: str
) -> None:
    maintenance = Answer(status=455, message="maintenance", retry_after=2)
    kie.script("create", maintenance, maintenance)
    xai.script("create", maintenance)
    kie_before, xai_before = kie.calls["create"], xai.calls["create"]

    done = _run(server, key)

    assert done["status"] == "SUCCESS", done
    # kie (455) -> xai at once (455) -> kie after Retry-After (455) -> xai (ok)
    assert kie.calls["create"] - kie_before == 2
    assert xai.calls["create"] - xai_before == 2
    first_xai = xai.call_times["create"][-2]
    second_kie = kie.call_times["create"][-1]
    assert second_kie - first_xai >= 1.9


@pytest.mark.parametrize(("code", "words"), [(401, "credentials"), (422, "rejected the input")])
def test_final_errors_while_polling_fail_and_refund(
    server: ServerProcess, kie: FakeKie, key: str, code: int, words: str
) -> None:
    kie.callbacks = False
    kie.script("poll", Answer(status=code, message="no"))
    try:
        done = _run(server, key)
    finally:
        kie.callbacks = True
    assert done["status"] == "FAILED"
    assert words in str(done["error_message"])
    assert balance(server.url, key) == 100

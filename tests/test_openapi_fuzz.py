"""Schemathesis against the server's own OpenAPI document, as a running server serves it.

Every operation is fuzzed with a valid key, every /api operation without one, and the
admin operations with the admin token. Whatever comes back must be no 5xx, a status code
and a content type the document declares for that operation, a body that matches the
declared schema, and declared headers that match theirs; and an operation that declares
a security scheme and succeeds must refuse the same request without its credentials, or
with wrong ones (schemathesis's ignored_auth sends both). Then the answers that fuzzing
rarely reaches (a real result file and its ranges, waits, replays, the admin API on real
accounts) are checked against the same document.

The fuzzing runs each operation's Hypothesis test from schemathesis's strategies
(`APIOperation.as_strategy`, the schema's examples) inside a subtest per operation,
rather than through `schemathesis.pytest.from_fixture(...).parametrize()`: that loader
needs the schema while pytest collects (the server only exists once a fixture runs), and
the lazy variant sets `Function._nodeid`, which pytest 9.2 no longer has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import auth, create_task, new_key, text_to_image, wait_done
from tests.support.server import ADMIN_TOKEN, ServerProcess

AnyCase = Case[Any]
Operation = APIOperation[Any, Any, Any, Any]

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]

FUZZING = settings(
    max_examples=25,
    # Each example is a round trip to a live server on a machine that may be busy.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # Nothing kept between runs: every run draws afresh (a failure prints its seed).
    database=None,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "IMAGINE_PREVIEW_DELAY": "0",
        # Limits far above what the fuzzing sends, so that generate and status answer
        # with their X-RateLimit-* headers and those are checked against the document.
        "IMAGINE_RATE_LIMIT_GENERATE": "1000000/minute",
        "IMAGINE_RATE_LIMIT_STATUS": "1000000/minute",
    }
    with ServerProcess(tmp_path_factory.mktemp("fuzz"), env) as running:
        yield running


@pytest.fixture(scope="module")
def rich_key(fuzz_server: ServerProcess) -> str:
    """A key whose account never runs out, so generate answers 200, not only 402."""
    created: str = new_key(fuzz_server.url, credits=10**9, name="fuzz")["key"]
    return created


@pytest.fixture(scope="module")
def finished(fuzz_server: ServerProcess, rich_key: str) -> dict[str, Any]:
    """A finished public task with a webhook queued: the lists, the gallery and the
    deliveries have items whose shape the document must describe."""
    body = {
        **text_to_image("a lighthouse in the fog"),
        "public": True,
        # Resolves nowhere (RFC 6761): the delivery is listed, its attempts fail.
        "callback_url": "http://hooks.invalid/imagine",
    }
    task_id = create_task(fuzz_server.url, rich_key, body)
    status = wait_done(fuzz_server.url, rich_key, task_id)
    assert status["status"] == "SUCCESS", status
    return status


@pytest.fixture(scope="module")
def openapi_schema(fuzz_server: ServerProcess) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def fuzz(
    schema: BaseSchema,
    subtests: pytest.Subtests,
    send: Callable[[AnyCase], None],
    chosen: Callable[[Operation], bool] = lambda _: True,
) -> list[str]:
    """Fuzz each chosen operation in its own subtest; the labels of those fuzzed."""
    fuzzed = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        if not chosen(operation):
            continue
        # Valid data, invalid data (wrong types, missing fields, values out of their
        # schema), and the examples the document gives.
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        strategies += schema.get_strategies_from_examples(operation)

        @FUZZING
        @given(case=st.one_of(strategies))
        def run(case: AnyCase) -> None:
            send(case)

        with subtests.test(msg=operation.label):
            run()
        fuzzed.append(operation.label)
    return fuzzed


def test_every_operation_with_a_key(
    openapi_schema: BaseSchema,
    rich_key: str,
    finished: dict[str, Any],
    subtests: pytest.Subtests,
) -> None:
    def send(case: AnyCase) -> None:
        case.call_and_validate(headers=auth(rich_key), checks=CHECKS)

    fuzzed = fuzz(openapi_schema, subtests, send)
    assert {"POST /api/generate", "GET /gallery", "GET /files/{task_id}/{name}"} <= set(fuzzed)


def test_api_operations_without_a_key(
    openapi_schema: BaseSchema, finished: dict[str, Any], subtests: pytest.Subtests
) -> None:
    def send(case: AnyCase) -> None:
        case.headers.pop("Authorization", None)
        case.call_and_validate(checks=CHECKS)

    fuzzed = fuzz(openapi_schema, subtests, send, lambda op: op.path.startswith("/api/"))
    assert "GET /api/status" in fuzzed


def test_admin_operations_with_the_admin_token(
    openapi_schema: BaseSchema, subtests: pytest.Subtests
) -> None:
    def send(case: AnyCase) -> None:
        case.call_and_validate(headers=auth(ADMIN_TOKEN), checks=CHECKS)

    fuzzed = fuzz(openapi_schema, subtests, send, lambda op: "admin" in (op.tags or []))
    assert len(fuzzed) == 13


def _call(
    schema: BaseSchema,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    **parts: Any,
) -> httpx.Response:
    """One request built from the document's operation, checked like the fuzzed ones;
    the answer as httpx would have it, for the assertions of the test."""
    case = schema[path][method].Case(headers=headers, **parts)
    answer = case.call_and_validate(checks=CHECKS)
    got = [(name, value) for name, values in answer.headers.items() for value in values]
    return httpx.Response(answer.status_code, headers=got, content=answer.content or b"")


def test_answers_fuzzing_rarely_reaches_match_the_document(
    openapi_schema: BaseSchema, fuzz_server: ServerProcess, rich_key: str, finished: dict[str, Any]
) -> None:
    key = auth(rich_key)
    task_id, name = urlsplit(finished["response"]["resultUrls"][0]).path.split("/")[-2:]
    file = {"path_parameters": {"task_id": task_id, "name": name}}
    whole = _call(openapi_schema, "GET", "/files/{task_id}/{name}", **file)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "image/png"
    ranges = {"bytes=0-9": 206, "bytes=0-1,4-5": 206, "bytes=zzz": 400, "bytes=99999999-": 416}
    for asked, expected in ranges.items():
        part = _call(
            openapi_schema, "GET", "/files/{task_id}/{name}", headers={"Range": asked}, **file
        )
        assert part.status_code == expected, asked
    unchanged = {"If-None-Match": whole.headers["etag"]}
    again = _call(openapi_schema, "GET", "/files/{task_id}/{name}", headers=unchanged, **file)
    assert again.status_code == 304

    retried = {**key, "Prefer": "wait=30", "Idempotency-Key": "fuzz-replay"}
    body = text_to_image("waves at dusk")
    first = _call(openapi_schema, "POST", "/api/generate", headers=retried, body=body)
    assert first.status_code == 200
    assert first.headers["preference-applied"] == "wait=30"
    assert first.json()["data"]["status"] == "SUCCESS"
    replay = _call(openapi_schema, "POST", "/api/generate", headers=retried, body=body)
    assert replay.headers["idempotent-replayed"] == "true"
    created = first.json()["data"]["task_id"]

    status = _call(openapi_schema, "GET", "/api/status", headers=key, query={"task_id": created})
    assert status.status_code == 200
    assert int(status.headers["x-ratelimit-remaining"]) >= 0
    ended = _call(openapi_schema, "POST", "/api/cancel", headers=key, body={"task_id": created})
    assert ended.status_code == 409
    assert _call(openapi_schema, "GET", "/api/tasks", headers=key).json()["data"]["items"]
    assert _call(openapi_schema, "GET", "/api/gallery").json()["data"]["items"]
    assert _call(openapi_schema, "GET", "/gallery").status_code == 200
    assert _call(openapi_schema, "GET", "/api/webhooks", headers=key).json()["data"]

    admin = auth(ADMIN_TOKEN)
    account = _call(openapi_schema, "GET", "/api/credits", headers=key).json()["data"]
    grant = {"account": account["account_id"], "amount": 5, "note": "fuzz"}
    assert _call(openapi_schema, "POST", "/admin/credits/grant", headers=admin, body=grant)
    path = {"account": account["account_id"]}
    ledger = _call(
        openapi_schema, "GET", "/admin/credits/{account}", headers=admin, path_parameters=path
    )
    assert ledger.json()["data"]["ledger"]
    spare = new_key(fuzz_server.url, credits=0, name="spare")
    revoked = _call(
        openapi_schema,
        "POST",
        "/admin/keys/{key_id}/revoke",
        headers=admin,
        path_parameters={"key_id": spare["key_id"]},
    )
    assert revoked.json()["data"]["revoked_at"]

    # The console's views on real rows: a ledger's pages, a task, its delivery retried.
    pages = "/admin/accounts/{account_id}/ledger"
    mine = {"account_id": account["account_id"]}
    first = _call(
        openapi_schema, "GET", pages, headers=admin, path_parameters=mine, query={"limit": "1"}
    ).json()["data"]
    assert first["next_cursor"]
    more = {"cursor": first["next_cursor"]}
    assert _call(
        openapi_schema, "GET", pages, headers=admin, path_parameters=mine, query=more
    ).json()["data"]["items"]
    task = {"task_id": finished["task_id"]}
    shown = _call(
        openapi_schema, "GET", "/admin/tasks/{task_id}", headers=admin, path_parameters=task
    )
    assert shown.json()["data"]["status"] == "SUCCESS"
    listed = _call(openapi_schema, "GET", "/admin/tasks", headers=admin, query=mine)
    assert listed.json()["data"]["items"]
    assert _call(openapi_schema, "GET", "/admin/accounts", headers=admin).json()["data"]["items"]
    (delivery,) = _call(
        openapi_schema, "GET", "/admin/webhooks/deliveries", headers=admin, query=task
    ).json()["data"]["items"]
    tried_again = _call(
        openapi_schema,
        "POST",
        "/admin/webhooks/deliveries/{delivery_id}/retry",
        headers=admin,
        path_parameters={"delivery_id": delivery["id"]},
    )
    assert tried_again.json()["data"]["id"] == delivery["id"]
    assert _call(openapi_schema, "GET", "/admin/queue", headers=admin).json()["data"]["due"] >= 0


def test_digits_of_other_scripts_and_endless_numbers_are_refused_not_crashed(
    openapi_schema: BaseSchema, rich_key: str
) -> None:
    """A digit such as "²" is one to str.isdigit() but not to int(), which also refuses
    numbers of thousands of digits: such values are answered in the envelope, never 500."""
    key = auth(rich_key)
    for limit in ("²³", "٣", "9" * 5000, "0" * 5000 + "7"):
        for path in ("/api/tasks", "/api/gallery", "/gallery"):
            answer = _call(openapi_schema, "GET", path, headers=key, query={"limit": limit})
            expected = 200 if limit.endswith("07") else 422
            assert answer.status_code == expected, (path, limit[:10])
    for prefer in ("wait=²", "wait=" + "9" * 5000, "wait=" + "0" * 5000 + "1"):
        headers = {**key, "Prefer": prefer}
        body = text_to_image("a quiet harbour")
        answer = _call(openapi_schema, "POST", "/api/generate", headers=headers, body=body)
        assert answer.status_code == 200, prefer[:10]

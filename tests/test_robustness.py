"""No input makes the server answer 500 or leave the envelope; URLs follow the settings."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import auth, create_task, new_key, text_to_image, wait_done
from tests.support.server import ServerProcess

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(["model", "input", "callback_url", "public", "prompt", "task_id"])
input_like = st.fixed_dictionaries(
    {},
    optional={
        "prompt": json_values,
        "image_urls": json_values,
        "task_id": json_values,
    },
)
bodies = st.one_of(
    json_values,
    st.dictionaries(field_names, json_values, max_size=4),
    st.fixed_dictionaries(
        {"input": input_like},
        optional={
            "model": st.sampled_from(
                [
                    "grok-imagine/text-to-image",
                    "grok-imagine/text-to-video",
                    "grok-imagine/image-to-video",
                    "grok-imagine/upscale",
                    "other",
                ]
            ),
            "callback_url": json_values,
            "public": json_values,
        },
    ),
)


def assert_envelope(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "data"}
    assert body["code"] == answer.status_code
    if answer.status_code != 200:
        assert body["data"] is None
        assert body["message"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_any_generate_body_gets_an_envelope(server: ServerProcess, body: Any) -> None:
    key = _fuzz_key(server)
    answer = httpx.post(
        f"{server.url}/api/generate", content=json.dumps(body), headers=auth(key), timeout=30
    )
    assert_envelope(answer)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.binary(max_size=200), task_id=st.text(max_size=120))
def test_any_status_request_gets_an_envelope(
    server: ServerProcess, raw: bytes, task_id: str
) -> None:
    key = _fuzz_key(server)
    assert_envelope(httpx.post(f"{server.url}/api/status", content=raw, headers=auth(key)))
    assert_envelope(
        httpx.get(f"{server.url}/api/status", params={"task_id": task_id}, headers=auth(key))
    )


_keys: dict[str, str] = {}


def _fuzz_key(server: ServerProcess) -> str:
    if server.url not in _keys:
        _keys[server.url] = new_key(server.url, credits=10**9)["key"]
    return _keys[server.url]


def test_result_urls_are_built_on_the_public_url(make_server: Any) -> None:
    server = make_server({"IMAGINE_PUBLIC_URL": "https://cdn.example.com/imagine/"})
    key = new_key(server.url)["key"]
    data = wait_done(server.url, key, create_task(server.url, key, {"input": {"prompt": "x"}}))
    url = data["response"]["resultUrls"][0]
    assert url.startswith("https://cdn.example.com/imagine/files/")
    # The same file is served locally under /files/.
    local = httpx.get(server.url + url.removeprefix("https://cdn.example.com/imagine"))
    assert local.status_code == 200
    assert local.headers["content-type"] == "image/png"


def test_methods_and_paths_outside_the_api(server: ServerProcess) -> None:
    for method, path, code in (
        ("DELETE", "/api/generate", 405),
        ("GET", "/api/generate", 405),
        ("GET", "/api/nothing", 404),
        ("GET", "/files/../imagine.db", 404),
    ):
        answer = httpx.request(method, server.url + path)
        assert answer.status_code == code
        assert_envelope(answer)


def _cursor_with(task_id: str) -> str:
    raw = f"2026-01-01T00:00:00+00:00|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_strings_no_database_can_store_are_refused_naming_the_field(
    engine_server: tuple[ServerProcess, Any],
) -> None:
    """A NUL character can't be stored in text by PostgreSQL (SQLite would store it, and
    the two engines must answer alike): every way in answers 4xx naming the field."""
    server, _ = engine_server
    key = new_key(server.url)["key"]
    headers = auth(key)
    nul = "t\u0000x"
    calls: list[tuple[str, str, dict[str, Any], str]] = [
        ("GET", "/api/status", {"params": {"task_id": nul}}, "task_id"),
        ("POST", "/api/status", {"json": {"task_id": nul}}, "task_id"),
        ("POST", "/api/status", {"params": {"task_id": nul}}, "task_id"),
        ("POST", "/api/cancel", {"json": {"task_id": nul}}, "task_id"),
        ("POST", "/api/cancel", {"params": {"task_id": nul}}, "task_id"),
        (
            "POST",
            "/api/generate",
            {"json": {"model": "grok-imagine/upscale", "input": {"task_id": nul}}},
            "input.task_id",
        ),
        (
            "POST",
            "/api/generate",
            {"json": {"input": {"prompt": "p"}, "callback_url": f"https://a.example/{nul}"}},
            "callback_url",
        ),
        ("POST", "/api/generate", {"json": {"input": {"prompt": nul}}}, "input.prompt"),
        (
            "POST",
            "/api/generate",
            {"json": {"model": nul, "input": {"prompt": "p"}}},
            "model",
        ),
        ("GET", "/api/tasks", {"params": {"model": nul}}, "model"),
        ("GET", "/api/tasks", {"params": {"cursor": nul}}, "cursor"),
        # A NUL hidden in the cursor's base64 is refused as a cursor we never gave out.
        ("GET", "/api/tasks", {"params": {"cursor": _cursor_with(nul)}}, "cursor"),
        ("GET", "/api/gallery", {"params": {"cursor": _cursor_with(nul)}}, "cursor"),
        ("GET", "/api/webhooks", {"params": {"task_id": nul}}, "task_id"),
        ("GET", "/api/gallery", {"params": {"model": nul}}, "model"),
    ]
    for method, path, options, field in calls:
        answer = httpx.request(method, f"{server.url}{path}", headers=headers, **options)
        assert_envelope(answer)
        assert answer.status_code == 422, (path, options, answer.text)
        assert answer.json()["message"].startswith(f"{field}: "), (path, answer.text)
    for path in ("/api/gallery/t%00x", "/admin/keys/k%00x/revoke"):
        answer = httpx.request("DELETE" if "gallery" in path else "POST", server.url + path)
        assert_envelope(answer)
        assert answer.status_code == 400
    admin = httpx.post(
        f"{server.url}/admin/keys",
        json={"name": nul, "credits": 1},
        headers=auth("test-admin-token"),
    )
    assert_envelope(admin)
    assert admin.status_code == 422
    assert admin.json()["message"].startswith("name: ")
    assert (
        wait_done(server.url, key, create_task(server.url, key, text_to_image()))["status"]
        == "SUCCESS"
    )

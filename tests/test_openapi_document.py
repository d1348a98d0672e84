"""The OpenAPI document, as a running server serves it at /openapi.json, is complete: what
a client generator or a reader needs is declared, and declared the same way everywhere.

- every operation has its readable operationId (the list below is the contract: a new
  route fails here until it is named);
- every operation has a success answer with a schema, or the non-JSON content type it
  really sends (the gallery page, the metrics, the result files with their ranges);
- every error is declared in the envelope (ErrorEnvelope), except the two plain-text
  answers that Starlette's file serving sends on /files;
- the API key scheme is on /api (but the two public lists), the admin token scheme on
  /admin, none elsewhere; each scheme is an HTTP bearer scheme of its own;
- the request headers (Idempotency-Key, Prefer, Range) and the response headers
  (X-RateLimit-*, Retry-After, Idempotent-Replayed, Preference-Applied, Content-Range)
  are declared where they are sent, and the rate-limit headers are the ones the limiter
  really sends.

That the answers match the document is checked elsewhere: tests/test_wire_schemas.py
drives every route through a scenario, tests/test_openapi_fuzz.py fuzzes every operation
with schemathesis (an undeclared status code, content type, header or body fails both).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from imagine.services.ratelimit import Decision
from tests.support.api import http
from tests.support.server import ServerProcess

JSON = Any
ERROR_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}

OPERATION_IDS = {
    ("POST", "/api/generate"): "generate",
    ("GET", "/api/status"): "getStatus",
    ("POST", "/api/status"): "postStatus",
    ("POST", "/api/cancel"): "cancelTask",
    ("GET", "/api/tasks"): "listTasks",
    ("GET", "/api/credits"): "getCredits",
    ("GET", "/api/models"): "listModels",
    ("GET", "/api/gallery"): "listGallery",
    ("DELETE", "/api/gallery/{task_id}"): "unpublishTask",
    ("GET", "/api/webhook-secret"): "getWebhookSecret",
    ("POST", "/api/webhook-secret/rotate"): "rotateWebhookSecret",
    ("GET", "/api/webhooks"): "listWebhookDeliveries",
    ("GET", "/gallery"): "getGalleryPage",
    ("GET", "/files/{task_id}/{name}"): "getResultFile",
    ("GET", "/healthz"): "getHealth",
    ("GET", "/readyz"): "getReadiness",
    ("GET", "/metrics"): "getMetrics",
    ("POST", "/admin/keys"): "adminCreateKey",
    ("GET", "/admin/keys"): "adminListKeys",
    ("POST", "/admin/keys/{key_id}/revoke"): "adminRevokeKey",
    ("POST", "/admin/credits/grant"): "adminGrantCredits",
    ("GET", "/admin/credits/{account}"): "adminGetCredits",
    ("GET", "/admin/providers"): "adminListProviders",
    ("GET", "/admin/accounts"): "adminListAccounts",
    ("GET", "/admin/accounts/{account_id}/ledger"): "adminListLedger",
    ("GET", "/admin/tasks"): "adminListTasks",
    ("GET", "/admin/tasks/{task_id}"): "adminGetTask",
    ("GET", "/admin/webhooks/deliveries"): "adminListDeliveries",
    ("POST", "/admin/webhooks/deliveries/{delivery_id}/retry"): "adminRetryDelivery",
    ("GET", "/admin/queue"): "adminGetQueue",
}

PUBLIC_API = {"listModels", "listGallery"}
"""/api operations that take no key."""
RATE_LIMITED = {"generate", "getStatus", "postStatus"}
"""The operations behind IMAGINE_RATE_LIMIT_GENERATE and IMAGINE_RATE_LIMIT_STATUS."""

NOT_JSON = {
    "getGalleryPage": {"text/html"},
    "getMetrics": {"text/plain"},
    "getResultFile": {"image/png", "image/jpeg", "image/webp", "video/mp4"},
}
"""Operations whose success is not the JSON envelope, and media types they must declare."""
PLAIN_TEXT_ERRORS = {("getResultFile", "400"), ("getResultFile", "416")}
"""Starlette's file serving answers a Range it can't read (400) or satisfy (416) in plain
text; the document says so beside the envelope (the bucket-backed route's answer)."""

DOCUMENTED_CODES = {
    "generate": {200, 400, 401, 402, 413, 422, 429, 431, 503},
    "getStatus": {200, 401, 404, 413, 422, 429, 431, 503},
    "postStatus": {200, 400, 401, 404, 413, 422, 429, 431, 503},
    "cancelTask": {200, 400, 401, 404, 409, 413, 422, 431, 503},
    "getCredits": {200, 401, 413, 431, 503},
    "listModels": {200, 413, 431},
    "listTasks": {200, 401, 413, 422, 431, 503},
    "listGallery": {200, 413, 422, 431, 503},
    "unpublishTask": {200, 400, 401, 404, 413, 431, 503},
    "getGalleryPage": {200, 413, 422, 431, 503},
    "getWebhookSecret": {200, 401, 413, 431, 503},
    "rotateWebhookSecret": {200, 401, 413, 431, 503},
    "listWebhookDeliveries": {200, 401, 404, 413, 422, 431, 503},
    "getResultFile": {200, 206, 304, 307, 400, 404, 413, 416, 431, 503},
    "getHealth": {200, 413, 431},
    "getReadiness": {200, 413, 431, 503},
    "getMetrics": {200, 413, 431},
    "adminCreateKey": {200, 400, 401, 404, 413, 422, 431, 503},
    "adminListKeys": {200, 401, 404, 413, 431, 503},
    "adminRevokeKey": {200, 400, 401, 404, 413, 431, 503},
    "adminGrantCredits": {200, 400, 401, 404, 413, 422, 431, 503},
    "adminGetCredits": {200, 400, 401, 404, 413, 431, 503},
    "adminListProviders": {200, 401, 404, 413, 431},
    "adminListAccounts": {200, 401, 404, 413, 422, 431, 503},
    "adminListLedger": {200, 400, 401, 404, 413, 422, 431, 503},
    "adminListTasks": {200, 401, 404, 413, 422, 431, 503},
    "adminGetTask": {200, 400, 401, 404, 413, 431, 503},
    "adminListDeliveries": {200, 401, 404, 413, 422, 431, 503},
    "adminRetryDelivery": {200, 400, 401, 404, 409, 413, 431, 503},
    "adminGetQueue": {200, 401, 404, 413, 431, 503},
}
"""What each operation can answer, and nothing more: a code listed is one some request
gets (read from the route and what it calls; the fuzzing and the wire test meet most),
so a client that handles these handles everything (500 aside, which nothing should
answer)."""


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> JSON:
    answer = http.get(f"{server.url}/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    return answer.json()


def operations(document: JSON) -> Iterator[tuple[str, str, JSON]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def by_id(document: JSON) -> dict[str, JSON]:
    return {operation["operationId"]: operation for _, _, operation in operations(document)}


def resolve(document: JSON, schema: JSON) -> JSON:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_operation_has_its_readable_id_and_one_tag(document: JSON) -> None:
    found = {(method, path): op.get("operationId") for method, path, op in operations(document)}
    assert found == OPERATION_IDS
    assert len(set(found.values())) == len(found)
    for _, _, operation in operations(document):
        # One group each in the docs pages, and one module each in a generated client.
        assert len(operation["tags"]) == 1, operation["operationId"]
        assert operation["summary"], operation["operationId"]


def test_every_success_has_a_schema_or_its_own_content_type(document: JSON) -> None:
    for method, path, operation in operations(document):
        name = operation["operationId"]
        successes = {code: r for code, r in operation["responses"].items() if code[0] == "2"}
        assert successes, f"{method} {path}: no 2xx answer declared"
        for code, response in successes.items():
            content = response.get("content")
            assert content, f"{name} {code}: no content declared"
            if name in NOT_JSON:
                media = {media.split(";")[0] for media in content}
                assert NOT_JSON[name] <= media, (name, code, sorted(media))
                for body in content.values():
                    assert body.get("schema", {}).get("type") == "string", (name, code)
                continue
            assert list(content) == ["application/json"], (name, code)
            envelope = resolve(document, content["application/json"]["schema"])
            assert envelope["title"].startswith("Envelope["), (name, envelope["title"])
            assert set(envelope["required"]) == {"data"}, name
            assert set(envelope["properties"]) == {"code", "message", "data"}, name


def test_the_binary_and_text_answers(document: JSON) -> None:
    ops = by_id(document)
    metrics = ops["getMetrics"]["responses"]["200"]["content"]
    # The exposition format's version is whatever prometheus_client writes, and so is
    # the content type declared.
    assert list(metrics) == [CONTENT_TYPE_LATEST]
    assert CONTENT_TYPE_LATEST.startswith("text/plain; version=")

    files = ops["getResultFile"]
    headers = {p["name"] for p in files["parameters"] if p["in"] == "header"}
    assert headers == {"Range"}
    for code in ("200", "206"):
        for body in files["responses"][code]["content"].values():
            assert body["schema"] == {"type": "string", "format": "binary"}
    assert "Content-Range" in files["responses"]["206"]["headers"]
    assert "multipart/byteranges" in files["responses"]["206"]["content"]
    assert "Location" in files["responses"]["307"]["headers"]
    assert "content" not in files["responses"]["304"]


def test_every_error_is_the_envelope(document: JSON) -> None:
    assert document["components"]["schemas"]["ErrorEnvelope"]["required"] == [
        "code",
        "message",
        "data",
    ]
    for _, _, operation in operations(document):
        name = operation["operationId"]
        for code, response in operation["responses"].items():
            if code[0] not in "45":
                continue
            content = response.get("content", {})
            if (name, code) in PLAIN_TEXT_ERRORS:
                assert set(content) <= {"application/json", "text/plain"}, (name, code)
                assert "text/plain" in content, (name, code)
                content = {k: v for k, v in content.items() if k != "text/plain"}
                if not content:
                    continue
            assert content == {"application/json": {"schema": ERROR_ENVELOPE}}, (name, code)
            assert response["description"], (name, code)
    # FastAPI's own 422 (HTTPValidationError) would describe an answer nobody gets.
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_each_operation_declares_what_it_can_answer_and_no_more(document: JSON) -> None:
    declared = {
        name: {int(code) for code in operation["responses"]}
        for name, operation in by_id(document).items()
    }
    assert declared == DOCUMENTED_CODES
    for name, codes in declared.items():
        # The edge refuses oversized requests before any route runs.
        assert {413, 431} <= codes, name
        assert (429 in codes) == (name in RATE_LIMITED), name


def test_the_security_schemes(document: JSON) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"bearerAuth", "adminToken"}
    for scheme in schemes.values():
        assert scheme["type"] == "http"
        assert scheme["scheme"] == "bearer"
    assert "IMAGINE_ADMIN_TOKEN" in schemes["adminToken"]["description"]
    assert "security" not in document  # each operation says, none by default

    for _, path, operation in operations(document):
        name = operation["operationId"]
        security = operation.get("security")
        if path.startswith("/admin/"):
            assert security == [{"adminToken": []}], name
        elif path.startswith("/api/") and name not in PUBLIC_API:
            assert security == [{"bearerAuth": []}], name
        else:
            assert security is None, name
        assert (401 in DOCUMENTED_CODES[name]) == (security is not None), name


def test_the_request_headers(document: JSON) -> None:
    generate = by_id(document)["generate"]
    headers = {p["name"]: p for p in generate["parameters"] if p["in"] == "header"}
    assert set(headers) == {"Idempotency-Key", "Prefer"}
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == 200
    assert headers["Prefer"]["example"] == "wait=5"
    assert generate["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GenerateRequest"
    }
    for _, _, operation in operations(document):
        for parameter in operation.get("parameters", []):
            # Authorization is the security scheme's, never a parameter of its own.
            assert parameter["name"].lower() != "authorization", operation["operationId"]
            assert parameter.get("description"), (operation["operationId"], parameter["name"])


def test_the_response_headers_are_the_ones_really_sent(document: JSON) -> None:
    ops = by_id(document)
    allowed = Decision(allowed=True, limit=10, remaining=9, reset_after=60).headers()
    refused = Decision(allowed=False, limit=10, remaining=0, reset_after=60).headers()
    assert "Retry-After" in refused
    for name in RATE_LIMITED:
        responses = ops[name]["responses"]
        assert set(allowed) <= set(responses["200"]["headers"]), name
        assert set(refused) == set(responses["429"]["headers"]), name
    sent_by_generate = {"Idempotent-Replayed", "Preference-Applied", *allowed}
    assert set(ops["generate"]["responses"]["200"]["headers"]) == sent_by_generate
    for name, operation in ops.items():
        if name not in RATE_LIMITED and name != "getResultFile":
            for code, response in operation["responses"].items():
                assert "headers" not in response, (name, code)


def test_generate_answers_the_status_data_when_a_wait_saw_the_task_end(document: JSON) -> None:
    """With `Prefer: wait=N` the answer is the task as GET /api/status answers it if it
    ended in time, else its id and status; the more specific shape is tried first."""
    content = by_id(document)["generate"]["responses"]["200"]["content"]
    envelope = resolve(document, content["application/json"]["schema"])
    shapes = envelope["properties"]["data"]["anyOf"]
    assert shapes == [
        {"$ref": "#/components/schemas/StatusData"},
        {"$ref": "#/components/schemas/TaskCreated"},
    ]
    status = by_id(document)["getStatus"]["responses"]["200"]["content"]["application/json"]
    status_data = resolve(document, status["schema"])["properties"]["data"]
    assert status_data == {"$ref": "#/components/schemas/StatusData"}


def test_every_reference_resolves(document: JSON) -> None:
    schemas = document["components"]["schemas"]

    def walk(node: JSON) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for ref in walk(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref

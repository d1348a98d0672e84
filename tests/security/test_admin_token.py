"""The admin token: compared in constant time, refused in every wrong shape with a 401 in
the envelope, and the whole admin API absent (404) when IMAGINE_ADMIN_TOKEN is unset.

Timing can't be measured reliably on a shared machine, so the constant-time comparison is
checked in the source: `require_admin` compares the token with `hmac.compare_digest`, and
nothing derived from the token meets `==`, `!=`, `in`, `startswith` or any other call.
"""

from __future__ import annotations

import ast
import http.client
import inspect
import json
import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

from imagine.api import admin, deps
from imagine.config import Settings
from tests.security.common import assert_error_envelope
from tests.support.api import auth, new_key
from tests.support.api import http as client
from tests.support.server import ADMIN_TOKEN, ServerProcess

ADMIN_ROUTES = [
    ("GET", "/admin/keys", None),
    ("POST", "/admin/keys", {"name": "intruder", "credits": 10**9}),
    ("POST", "/admin/keys/key_0000000000000000/revoke", None),
    ("POST", "/admin/credits/grant", {"account": "acc_0000000000000000", "amount": 10**9}),
    ("GET", "/admin/credits/acc_0000000000000000", None),
    ("GET", "/admin/providers", None),
    ("GET", "/admin/accounts", None),
    ("GET", "/admin/accounts/acc_0000000000000000/ledger", None),
    ("GET", "/admin/tasks", None),
    ("GET", "/admin/tasks/t0000000000000000", None),
    ("GET", "/admin/webhooks/deliveries", None),
    ("POST", "/admin/webhooks/deliveries/msg_0000000000000000/retry", None),
    ("GET", "/admin/queue", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ADMIN_ROUTES]


def _mentions(node: ast.AST, names: set[str]) -> bool:
    """Whether the expression reads the token: a tainted name, `.admin_token`, or
    `.get_secret_value()`."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and inner.id in names:
            return True
        if isinstance(inner, ast.Attribute) and inner.attr in ("admin_token", "get_secret_value"):
            return True
    return False


def _is_compare_digest(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        return (
            func.attr == "compare_digest"
            and isinstance(func.value, ast.Name)
            and func.value.id in ("hmac", "secrets")
        )
    return isinstance(func, ast.Name) and func.id == "compare_digest"


def _tainted_names(function: ast.AST) -> set[str]:
    """Names that hold the token or something computed from it (to a fixed point)."""
    tainted: set[str] = set()
    while True:
        found = set(tainted)
        for node in ast.walk(function):
            if not isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr):
                continue
            if node.value is None or not _mentions(node.value, found):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                found |= {name.id for name in ast.walk(target) if isinstance(name, ast.Name)}
        if found == tainted:
            return tainted
        tainted = found


def constant_time_problems(source: str) -> list[str]:
    """What keeps a token check from being constant-time: no compare_digest of the token,
    or the token (or anything derived from it) in a plain comparison or any other call."""
    (function,) = ast.parse(textwrap.dedent(source)).body
    tainted = _tainted_names(function)
    if not tainted:
        return ["the admin token is never read"]
    problems = []
    digests = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and _is_compare_digest(node)
    ]
    if not any(any(_mentions(argument, tainted) for argument in call.args) for call in digests):
        problems.append("hmac.compare_digest is not given the admin token")
    for node in ast.walk(function):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            none_check = all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops) and any(
                isinstance(side, ast.Constant) and side.value is None for side in sides
            )
            if not none_check and any(_mentions(side, tainted) for side in sides):
                problems.append(f"a plain comparison: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and not _is_compare_digest(node):
            arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
            if any(_mentions(argument, tainted) for argument in arguments):
                problems.append(f"handed to something else: {ast.unparse(node)}")
    return problems


def test_the_admin_token_is_compared_with_compare_digest() -> None:
    assert constant_time_problems(inspect.getsource(deps.require_admin)) == []


@pytest.mark.parametrize(
    "check",
    [
        "given == token.get_secret_value()",
        "token.get_secret_value() != given",
        "given.startswith(token.get_secret_value())",
        "given in {token.get_secret_value()}",
        "hmac.compare_digest(given, given) and secret == given",
    ],
)
def test_the_source_check_catches_plain_comparisons(check: str) -> None:
    """The check above is only worth its pass if it fails these."""
    source = f"""
async def require_admin(request):
    token = request.app.state.runtime.settings.admin_token
    if token is None:
        raise NotFound("off")
    secret = token.get_secret_value()
    given = request.headers.get("authorization", "")
    if not ({check}):
        raise Unauthorized("invalid admin token")
"""
    assert constant_time_problems(source) != []


def test_every_admin_route_is_behind_require_admin() -> None:
    assert any(depends.dependency is deps.require_admin for depends in admin.router.dependencies)


WRONG_AUTHORIZATION: dict[str, bytes | None] = {
    "no header": None,
    "empty": b"",
    "scheme only": b"Bearer",
    "empty token": b"Bearer ",
    "last character differs": ("Bearer " + ADMIN_TOKEN[:-1] + "X").encode(),
    "first character differs": ("Bearer X" + ADMIN_TOKEN[1:]).encode(),
    "a prefix of the token": ("Bearer " + ADMIN_TOKEN[:-1]).encode(),
    "the token and more": ("Bearer " + ADMIN_TOKEN + "-and-more").encode(),
    "much longer": ("Bearer " + ADMIN_TOKEN * 50).encode(),
    "upper case token": ("Bearer " + ADMIN_TOKEN.upper()).encode(),
    "missing scheme": ADMIN_TOKEN.encode(),
    "no space after the scheme": ("Bearer" + ADMIN_TOKEN).encode(),
    "basic scheme": ("Basic " + ADMIN_TOKEN).encode(),
    "token scheme": ("Token " + ADMIN_TOKEN).encode(),
    "non-ASCII bytes": ("Bearer " + ADMIN_TOKEN).encode() + b"\xff\xfe",
}


@dataclass(frozen=True)
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def _call(
    server: ServerProcess,
    method: str,
    path: str,
    body: object,
    authorization: bytes | None,
) -> Answer:
    """One request with the Authorization header exactly as given (byte for byte, which
    httpx would refuse for some of the shapes tried)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest(method, path)
        if authorization is not None:
            connection.putheader("Authorization", authorization)
        payload = b"" if body is None else json.dumps(body).encode()
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(payload)))
        connection.endheaders(payload)
        response = connection.getresponse()
        return Answer(response.status, response.read().decode())
    finally:
        connection.close()


@pytest.mark.parametrize("shape", list(WRONG_AUTHORIZATION))
def test_a_wrong_admin_token_is_401_on_every_admin_route(
    quiet_server: ServerProcess, shape: str
) -> None:
    server = quiet_server
    for method, path, body in ADMIN_ROUTES:
        answer = _call(server, method, path, body, WRONG_AUTHORIZATION[shape])
        message = assert_error_envelope(answer, 401)
        assert "admin token" in message, message
        assert ADMIN_TOKEN not in answer.text  # nothing presented is echoed


def test_an_api_key_is_no_admin_token_and_the_admin_token_no_api_key(
    quiet_server: ServerProcess,
) -> None:
    server = quiet_server
    key = new_key(server.url, name="not an admin")["key"]
    assert_error_envelope(client.get(f"{server.url}/admin/keys", headers=auth(key)), 401)
    assert_error_envelope(client.get(f"{server.url}/api/credits", headers=auth(ADMIN_TOKEN)), 401)


def test_the_right_token_is_accepted_with_the_scheme_in_any_case(
    quiet_server: ServerProcess,
) -> None:
    server = quiet_server
    for scheme in ("Bearer", "bearer", "BEARER"):
        answer = client.get(
            f"{server.url}/admin/keys", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"}
        )
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=ROUTE_IDS)
def test_without_a_token_set_the_admin_api_is_off(
    bare_server: ServerProcess, route: tuple[str, str, object]
) -> None:
    method, path, body = route
    for authorization in (None, b"Bearer ", b"Bearer " + ADMIN_TOKEN.encode(), b"Bearer None"):
        answer = _call(bare_server, method, path, body, authorization)
        message = assert_error_envelope(answer, 404)
        assert "IMAGINE_ADMIN_TOKEN" in message, message


@pytest.mark.parametrize("blank", ["", " ", "\t \n"])
def test_a_blank_token_turns_the_admin_api_off(blank: str) -> None:
    """IMAGINE_ADMIN_TOKEN= (or only spaces) is off, never the empty password."""
    assert Settings(admin_token=blank).admin_token is None

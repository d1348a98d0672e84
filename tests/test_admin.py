"""The /admin API: keys and credits over HTTP, behind IMAGINE_ADMIN_TOKEN."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.api import auth, balance
from tests.support.server import ADMIN_TOKEN, ServerProcess


def test_admin_is_off_without_a_token(make_server: Any) -> None:
    server = make_server({"IMAGINE_ADMIN_TOKEN": ""})
    answer = httpx.get(f"{server.url}/admin/keys", headers=auth("anything"))
    assert answer.status_code == 404
    assert "IMAGINE_ADMIN_TOKEN" in answer.json()["message"]


def test_wrong_admin_token(server: ServerProcess) -> None:
    for headers in ({}, auth("nope"), {"Authorization": ADMIN_TOKEN}):
        answer = httpx.get(f"{server.url}/admin/keys", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["data"] is None


def test_keys_and_credits_over_http(server: ServerProcess) -> None:
    admin = auth(ADMIN_TOKEN)
    created = httpx.post(
        f"{server.url}/admin/keys", json={"name": "carol", "credits": 20}, headers=admin
    ).json()["data"]
    assert balance(server.url, created["key"]) == 20
    listed = httpx.get(f"{server.url}/admin/keys", headers=admin).json()["data"]
    assert any(row["key_id"] == created["key_id"] for row in listed)
    assert created["key"] not in str(listed)

    granted = httpx.post(
        f"{server.url}/admin/credits/grant",
        json={"account": created["account_id"], "amount": 30, "note": "top-up"},
        headers=admin,
    ).json()["data"]
    assert granted["balance"] == 50
    shown = httpx.get(f"{server.url}/admin/credits/{created['account_id']}", headers=admin)
    assert shown.json()["data"]["ledger"][0]["note"] == "top-up"

    revoked = httpx.post(f"{server.url}/admin/keys/{created['key_id']}/revoke", headers=admin)
    assert revoked.json()["data"]["revoked_at"]
    assert httpx.get(f"{server.url}/api/credits", headers=auth(created["key"])).status_code == 401


def test_bad_admin_input(server: ServerProcess) -> None:
    admin = auth(ADMIN_TOKEN)
    for body in ({"name": ""}, {"name": "x", "credits": -1}, {"name": "x", "credits": "5"}, {}):
        answer = httpx.post(f"{server.url}/admin/keys", json=body, headers=admin)
        assert answer.status_code == 422, answer.text
        assert answer.json()["data"] is None
    answer = httpx.post(
        f"{server.url}/admin/credits/grant", json={"account": "acc_x", "amount": 5}, headers=admin
    )
    assert answer.status_code == 404
    answer = httpx.post(
        f"{server.url}/admin/credits/grant", json={"account": "acc_x", "amount": 0}, headers=admin
    )
    assert answer.status_code in (404, 422)


def test_json_body_without_content_type(server: ServerProcess) -> None:
    """Like the public API, the admin API reads JSON whatever the Content-Type says."""
    answer = httpx.post(
        f"{server.url}/admin/keys",
        content=b'{"name": "curl-user", "credits": 3}',
        headers={**auth(ADMIN_TOKEN), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["balance"] == 3

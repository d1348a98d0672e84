"""No secret reaches the server's log, at debug level with the access log on: not an API
key (even one given where the admin API takes a key, in the URL path), not the admin
token, not a webhook secret, not a provider's API or webhook key, not the token of a
kie callback URL (shown masked), not a secret in the query of a callback_url.

The traffic is real: keys made and used, tasks through the fake kie (signed callbacks)
and the fake xAI, chaining, webhook secrets read and rotated, and error paths: a wrong
key, a wrong admin token, a forged callback, a provider refusing our key, a failed task.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.security.common import eventually
from tests.support.api import auth, create_task, generate, http, status, wait_done
from tests.support.fake_kie import FakeKie
from tests.support.fake_upstream import Answer
from tests.support.fake_xai import FakeXai
from tests.support.server import ServerProcess
from tests.support.upstreams import kie_env, xai_env

T2I = "grok-imagine/text-to-image"
T2V = "grok-imagine/text-to-video"
I2V = "grok-imagine/image-to-video"
ANY_KEY = re.compile(r"im_[A-Za-z0-9_-]{16,}")


@dataclass
class Logged:
    log: str
    secrets: dict[str, str] = field(default_factory=dict)
    """What each secret is -> the secret."""
    masked_paths: list[str] = field(default_factory=list)
    """Paths the access log must show with their secret masked."""


def _cli_key(data_dir: Path, env: dict[str, str]) -> str:
    command = ["keys", "create", "--name", "logged", "--credits", "1000", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "imagine", *command, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["key"]
    return key


def _admin(server: ServerProcess, token: str, method: str, path: str, body: Any = None) -> Any:
    answer = http.request(method, f"{server.url}{path}", json=body, headers=auth(token), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _traffic(server: ServerProcess, kie: FakeKie, found: Logged, admin_token: str) -> None:
    url = server.url
    remember = found.secrets.__setitem__
    # Keys, the operator's way; the admin API takes a key wherever it takes a key id.
    key = _admin(server, admin_token, "POST", "/admin/keys", {"name": "a", "credits": 500})["key"]
    remember("admin-made key", key)
    doomed = _admin(server, admin_token, "POST", "/admin/keys", {"name": "b"})["key"]
    remember("revoked key", doomed)
    _admin(server, admin_token, "GET", "/admin/keys")
    _admin(server, admin_token, "POST", "/admin/credits/grant", {"account": key, "amount": 5})
    _admin(server, admin_token, "GET", f"/admin/credits/{key}")
    _admin(server, admin_token, "POST", f"/admin/keys/{doomed}/revoke")
    # Shown by their prefix only, as `imagine keys list` shows them.
    found.masked_paths += [f"/admin/credits/{key[:10]}…", f"/admin/keys/{doomed[:10]}…/revoke"]
    # Each provider is asked, with its key; the answer shows no key.
    providers = http.get(f"{url}/admin/providers", headers=auth(admin_token), timeout=30)
    assert providers.status_code == 200, providers.text
    models = http.get(f"{url}/api/models")
    for what in ("kie API key", "kie webhook key", "xAI API key"):
        assert found.secrets[what] not in providers.text + models.text, what
    wrong_admin = "adm-" + secrets.token_hex(16)
    remember("wrong admin token", wrong_admin)
    assert http.get(f"{url}/admin/keys", headers=auth(wrong_admin)).status_code == 401

    # Webhook secrets, read and rotated.
    remember(
        "webhook secret",
        http.get(f"{url}/api/webhook-secret", headers=auth(key)).json()["data"]["secret"],
    )
    rotated = http.post(f"{url}/api/webhook-secret/rotate", headers=auth(key))
    remember("rotated webhook secret", rotated.json()["data"]["secret"])

    # Tasks through kie (signed callbacks) and xAI, chained, with a secret callback_url.
    hook_secret = secrets.token_hex(16)
    remember("callback_url query secret", hook_secret)
    image = create_task(
        url,
        key,
        {
            "model": T2I,
            "input": {"prompt": "a logged lighthouse"},
            "callback_url": f"https://hooks.example.invalid/h?secret={hook_secret}",
        },
    )
    assert wait_done(url, key, image)["status"] == "SUCCESS"
    # Nor do the answers show the callback_url's query, or kie's callback URL.
    for answer in (
        status(url, key, image),
        http.get(f"{url}/api/tasks", headers=auth(key)),
        http.get(f"{url}/api/webhooks", headers=auth(key)),
    ):
        assert answer.status_code == 200, answer.text
        assert hook_secret not in answer.text
        assert "/callbacks/" not in answer.text
    animated = create_task(url, key, {"model": I2V, "input": {"task_id": image}})
    video = create_task(url, key, {"model": T2V, "input": {"prompt": "logged waves"}})
    for task_id in (animated, video):
        assert wait_done(url, key, task_id)["status"] == "SUCCESS"
    assert http.post(f"{url}/api/status", json={"task_id": image}, headers=auth(key)).is_success

    # Error paths.
    kie.fail_next.append(("500", "Internal Error"))
    failed = create_task(url, key, {"model": T2I, "input": {"prompt": "fails upstream"}})
    assert wait_done(url, key, failed)["status"] == "FAILED"
    kie.script("create", Answer(status=401, message="You do not have access permissions"))
    refused = create_task(url, key, {"model": T2I, "input": {"prompt": "our key refused"}})
    assert wait_done(url, key, refused)["status"] == "FAILED"
    unknown_key = "im_" + secrets.token_urlsafe(30)
    remember("unknown key", unknown_key)
    assert generate(url, unknown_key, {"model": T2I, "input": {"prompt": "x"}}).status_code == 401
    assert http.get(f"{url}/api/credits", headers=auth(doomed)).status_code == 401
    assert status(url, key, "t" + "0" * 31).status_code == 404
    assert generate(url, key, {"model": T2V, "input": {}}).status_code == 422
    forged = secrets.token_urlsafe(24)
    remember("forged callback token", forged)
    forged_answer = http.post(f"{url}/callbacks/kie/{image}/{forged}", json={"code": 200})
    assert forged_answer.status_code < 500
    found.masked_paths.append(f"POST /callbacks/kie/{image}/<token>")
    running = create_task(url, key, {"model": T2V, "input": {"prompt": "cancelled"}})
    http.post(f"{url}/api/cancel", json={"task_id": running}, headers=auth(key))

    # Every callback URL kie was given: its token is a secret of its own.
    sent = eventually(
        lambda: [task for task in kie.tasks.values() if task.callback_url] or None,
        what="kie tasks with callback URLs",
    )
    for task in sent:
        callback_url = task.callback_url or ""
        our_task, token = callback_url.rsplit("/", 2)[1:]
        remember(f"callback token of {our_task}", token)
    for task in sent:
        if task.callback_status is not None:
            our_task = (task.callback_url or "").rsplit("/", 2)[1]
            found.masked_paths.append(f"POST /callbacks/kie/{our_task}/<token>")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    data_dir = tmp_path_factory.mktemp("logs")
    admin_token = "adm-" + secrets.token_hex(16)
    found = Logged(log="")
    with (
        FakeKie(task_seconds=0.3, webhook_key="kwh-" + secrets.token_hex(16)) as kie,
        FakeXai(task_seconds=0.3) as xai,
    ):
        kie.api_key = "kie-" + secrets.token_hex(16)
        xai.api_key = "xai-" + secrets.token_hex(16)
        env = {
            **kie_env(kie),
            **xai_env(xai),
            "IMAGINE_ROUTES": "text-to-image=kie;image-to-video=kie;text-to-video=xai",
            "IMAGINE_ADMIN_TOKEN": admin_token,
            "IMAGINE_LOG_LEVEL": "debug",
        }
        server = ServerProcess(data_dir, env)
        server.env["IMAGINE_PUBLIC_URL"] = server.url
        server.access_log = True
        # A key made before the first start, so the start prints none.
        found.secrets["CLI-made key"] = _cli_key(data_dir, server.env)
        found.secrets.update(
            {
                "admin token": admin_token,
                "kie API key": kie.api_key,
                "kie webhook key": kie.webhook_key or "",
                "xAI API key": xai.api_key,
            }
        )
        server.start()
        try:
            cli_key = found.secrets["CLI-made key"]
            assert http.get(f"{server.url}/api/credits", headers=auth(cli_key)).is_success
            _traffic(server, kie, found, admin_token)
        finally:
            server.stop()
        found.log = server.log()
    return found


def test_the_log_is_at_debug_level_with_the_access_log(logged: Logged) -> None:
    assert '"POST /api/generate HTTP/1.1" 200' in logged.log
    assert '"GET /api/webhook-secret HTTP/1.1" 200' in logged.log


@pytest.mark.parametrize(
    "what",
    [
        "CLI-made key",
        "admin-made key",
        "revoked key",
        "unknown key",
        "admin token",
        "wrong admin token",
        "webhook secret",
        "rotated webhook secret",
        "kie API key",
        "kie webhook key",
        "xAI API key",
        "callback_url query secret",
        "forged callback token",
    ],
)
def test_no_secret_is_logged(logged: Logged, what: str) -> None:
    secret = logged.secrets[what]
    assert len(secret) >= 16
    assert secret not in logged.log, f"the {what} is in the log"
    if secret.startswith("whsec_"):
        assert secret.removeprefix("whsec_") not in logged.log


def test_no_kie_callback_token_is_logged(logged: Logged) -> None:
    tokens = {what: token for what, token in logged.secrets.items() if what.startswith("callback")}
    assert len(tokens) >= 3  # every kie task's, plus the callback_url's query secret
    for what, token in tokens.items():
        assert token not in logged.log, f"the {what} is in the log"
    callbacks = [path for path in logged.masked_paths if path.startswith("POST /callbacks/")]
    assert len(callbacks) >= 3
    for masked in callbacks:
        assert masked in logged.log


def test_nothing_shaped_like_a_key_or_a_webhook_secret_is_logged(logged: Logged) -> None:
    assert ANY_KEY.findall(logged.log) == []
    assert "whsec_" not in logged.log


def test_keys_in_admin_paths_are_logged_by_their_prefix(logged: Logged) -> None:
    admin_paths = [path for path in logged.masked_paths if path.startswith("/admin/")]
    assert len(admin_paths) == 2
    for masked in admin_paths:
        assert masked in logged.log

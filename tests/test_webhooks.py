"""Webhooks for callback_url: signed the Standard Webhooks way (checked here with the
independent `standardwebhooks` package), retried, durable across a crash."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from imagine.webhooks import WebhookVerificationError, verify
from tests.support.api import auth, create_task, generate, new_key, text_to_image, wait_done
from tests.support.images import image_server
from tests.support.receiver import receiver
from tests.support.server import ServerProcess, free_port

FAST = {"IMAGINE_ALLOW_PRIVATE_URLS": "true", "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "0.3s,0.3s,0.3s"}


def _eventually(check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


def _deliveries(server: ServerProcess, key: str, task_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/api/webhooks", params={"task_id": task_id}, headers=auth(key))
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


def test_a_delivery_is_signed_retried_and_accepted_once(make_server: Any) -> None:
    server = make_server(FAST)
    key = new_key(server.url)["key"]
    secret = httpx.get(f"{server.url}/api/webhook-secret", headers=auth(key)).json()["data"][
        "secret"
    ]
    assert secret.startswith("whsec_")
    with receiver(answers=(500, 503)) as hook:
        body = {**text_to_image("a webhook"), "callback_url": hook.url}
        task_id = create_task(server.url, key, body)
        status = wait_done(server.url, key, task_id)
        _eventually(lambda: len(hook.received) == 3)
        time.sleep(1.5)  # nothing more comes after the accepted one
        assert [got.answered for got in hook.received] == [500, 503, 204]

    for got in hook.received:
        # The independent verifier accepts every attempt; all carry the same message id.
        delivered = Webhook(secret).verify(got.body, got.headers)
        assert delivered == {"code": 200, "message": "success", "data": status}
        assert verify(got.body, got.headers, secret) == delivered
    assert len({got.headers["webhook-id"] for got in hook.received}) == 1

    (delivery,) = _deliveries(server, key, task_id)
    assert delivery["status"] == "delivered"
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 503, 204]
    assert delivery["url"] == hook.url
    stranger = new_key(server.url)["key"]
    hidden = httpx.get(
        f"{server.url}/api/webhooks", params={"task_id": task_id}, headers=auth(stranger)
    )
    assert hidden.status_code == 404

    tampered = hook.received[-1].body.replace(b"SUCCESS", b"FAILED")
    with pytest.raises(WebhookVerificationError):
        verify(tampered, hook.received[-1].headers, secret)
    rotated = httpx.post(f"{server.url}/api/webhook-secret/rotate", headers=auth(key))
    assert rotated.json()["data"]["secret"] not in (secret, None)


def test_a_failed_task_is_delivered_and_410_stops_retries(make_server: Any) -> None:
    server = make_server(FAST)
    key = new_key(server.url)["key"]
    with receiver(answers=(410,)) as hook, image_server() as images:
        body = {
            "model": "grok-imagine/image-to-video",
            "input": {"image_urls": [f"{images}/notes.txt"]},  # not an image: the task fails
            "callback_url": hook.url,
        }
        task_id = create_task(server.url, key, body)
        assert wait_done(server.url, key, task_id)["status"] == "FAILED"
        _eventually(lambda: len(hook.received) == 1)
        time.sleep(1.5)
        assert len(hook.received) == 1
        sent = orjson.loads(hook.received[0].body)
        assert sent["data"]["status"] == "FAILED"
        assert sent["data"]["consumed_credits"] == 0
    (delivery,) = _deliveries(server, key, task_id)
    assert delivery["status"] == "gone"


def test_a_queued_delivery_survives_a_crash(make_server: Any, tmp_path: Any) -> None:
    port = free_port()
    env = {"IMAGINE_ALLOW_PRIVATE_URLS": "true", "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "1s"}
    server = make_server(env, data_dir=tmp_path / "crash")
    key = new_key(server.url)["key"]
    url = f"http://127.0.0.1:{port}/hook"  # nobody listens yet
    task_id = create_task(server.url, key, {**text_to_image("crash"), "callback_url": url})
    assert wait_done(server.url, key, task_id)["status"] == "SUCCESS"
    _eventually(lambda: len(_deliveries(server, key, task_id)[0]["attempts"]) >= 1)
    server.kill()
    with receiver(port=port) as hook:
        restarted = ServerProcess(tmp_path / "crash", server.env, port=server.port).start()
        try:
            _eventually(lambda: len(hook.received) == 1)
            assert orjson.loads(hook.received[0].body)["data"]["task_id"] == task_id
            (delivery,) = _deliveries(restarted, key, task_id)
            assert delivery["status"] == "delivered"
        finally:
            restarted.stop()


def test_a_private_callback_url_is_refused_at_submit(server: ServerProcess, key: str) -> None:
    for url in ("http://127.0.0.1/hook", "http://[::1]/hook", "http://169.254.169.254/x"):
        answer = generate(server.url, key, {**text_to_image(), "callback_url": url})
        assert answer.status_code == 400
        assert answer.json()["message"].startswith("callback_url: points to a private")


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_the_outbox_on_both_engines(tmp_path: Any, engine: str) -> None:
    from tests.support.databases import (
        create_postgres_database,
        drop_postgres_database,
        sqlalchemy_url,
    )

    env = dict(FAST)
    database = None
    if engine == "postgres":
        database = create_postgres_database()
        env["IMAGINE_DATABASE_URL"] = sqlalchemy_url(database)
    server = ServerProcess(tmp_path / engine, env).start()
    try:
        key = new_key(server.url)["key"]
        with receiver(answers=(500,)) as hook:
            body = {**text_to_image("engines"), "callback_url": hook.url}
            task_id = create_task(server.url, key, body)
            wait_done(server.url, key, task_id)
            _eventually(lambda: len(hook.received) == 2)
        (delivery,) = _deliveries(server, key, task_id)
        assert delivery["status"] == "delivered"
        assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 204]
    finally:
        server.stop()
        if database is not None:
            drop_postgres_database(database)

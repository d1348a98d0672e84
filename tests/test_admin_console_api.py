"""The console's part of the /admin API over HTTP: accounts, ledgers, every account's tasks
and webhook deliveries (paged with cursors, filtered), a failed delivery retried until it
is delivered, and the queue of a server whose tasks wait for a worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from imagine.services.admin import shown_state
from tests.support.api import auth, cancel, create_task, http, new_key, text_to_image, wait_done
from tests.support.images import image_server
from tests.support.receiver import receiver
from tests.support.server import ADMIN_TOKEN, ServerProcess

ADMIN = auth(ADMIN_TOKEN)
VIDEO = "grok-imagine/text-to-video"
NO_TASK = "t0123456789abcdef0123456789abcdef"

NEW_ROUTES = [
    ("GET", "/admin/accounts"),
    ("GET", "/admin/accounts/acc_0000000000000000/ledger"),
    ("GET", "/admin/tasks"),
    ("GET", f"/admin/tasks/{NO_TASK}"),
    ("GET", "/admin/webhooks/deliveries"),
    ("POST", "/admin/webhooks/deliveries/msg_00000000000000000000000000000000/retry"),
    ("GET", "/admin/queue"),
]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Tasks end at once; webhooks may go to loopback and give up after two attempts."""
    env = {
        "IMAGINE_PREVIEW_DELAY": "0",
        "IMAGINE_ALLOW_PRIVATE_URLS": "true",
        "IMAGINE_WEBHOOK_RETRY_SCHEDULE": "0.3s",
    }
    with ServerProcess(tmp_path_factory.mktemp("console"), env) as running:
        yield running


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No worker: tasks stay due (or end by a cancel), and deliveries stay queued."""
    running = ServerProcess(tmp_path_factory.mktemp("idle"), {"IMAGINE_ALLOW_PRIVATE_URLS": "true"})
    running.no_worker = True
    with running:
        yield running


def admin_get(server: ServerProcess, path: str, **params: str) -> Any:
    answer = http.get(f"{server.url}{path}", params=params, headers=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["code"], body["message"]) == (200, "success")
    return body["data"]


def refused(server: ServerProcess, path: str, expected: int, **params: str) -> str:
    answer = http.get(f"{server.url}{path}", params=params, headers=ADMIN, timeout=30)
    assert answer.status_code == expected, answer.text
    body = answer.json()
    assert body["code"] == expected
    assert body["data"] is None
    message: str = body["message"]
    return message


def every_page(server: ServerProcess, path: str, **params: str) -> list[list[Any]]:
    """Each page's items, following next_cursor to the end."""
    pages: list[list[Any]] = []
    cursor: str | None = None
    while True:
        page = admin_get(server, path, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ran out"


def eventually(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def moment(text: str, seconds: int = 0) -> str:
    """An API timestamp (`...Z`, whole seconds) moved by `seconds`, in the same form."""
    shifted = datetime.fromisoformat(text) + timedelta(seconds=seconds)
    return shifted.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_every_new_route_wants_the_admin_token(console: ServerProcess) -> None:
    key = new_key(console.url, credits=0)["key"]
    for method, path in NEW_ROUTES:
        for headers in ({}, auth("not-the-token"), auth(key)):
            answer = http.request(method, f"{console.url}{path}", headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["data"] is None
            assert "admin token" in answer.json()["message"]


def test_accounts_page_by_page(console: ServerProcess) -> None:
    made = [new_key(console.url, credits=10 * n, name=f"account {n}") for n in range(5)]
    extra = http.post(
        f"{console.url}/admin/keys",
        json={"name": "second key", "account_id": made[0]["account_id"]},
        headers=ADMIN,
    ).json()["data"]
    revoked = http.post(f"{console.url}/admin/keys/{extra['key_id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200

    pages = every_page(console, "/admin/accounts", limit="2")
    assert len(pages) >= 3
    assert all(len(page) <= 2 for page in pages)
    listed = [item for page in pages for item in page]
    ids = [item["account_id"] for item in listed]
    assert len(ids) == len(set(ids))
    mine = [item for item in listed if item["account_id"] in {m["account_id"] for m in made}]
    # Newest first: the accounts made last come first.
    assert [item["account_id"] for item in mine] == [m["account_id"] for m in reversed(made)]
    first = next(item for item in mine if item["account_id"] == made[0]["account_id"])
    assert first == {
        "account_id": made[0]["account_id"],
        "name": "account 0",
        "balance": 0,
        "created_at": first["created_at"],
        "keys": 2,
        "active_keys": 1,
    }
    assert first["created_at"].endswith("Z")
    assert [item["balance"] for item in mine] == [40, 30, 20, 10, 0]
    assert all(item["keys"] == item["active_keys"] == 1 for item in mine[:-1])

    assert len(admin_get(console, "/admin/accounts")["items"]) <= 50
    for params in ({"cursor": "nonsense"}, {"limit": "0"}, {"limit": "101"}, {"limit": "x"}):
        refused(console, "/admin/accounts", 422, **params)
    task_cursor = admin_get(console, "/admin/tasks", limit="1")["next_cursor"]
    if task_cursor is not None:  # a task's cursor is no account's
        refused(console, "/admin/accounts", 422, cursor=task_cursor)


def test_an_accounts_ledger_page_by_page(idle: ServerProcess) -> None:
    made = new_key(idle.url, credits=100, name="ledger")
    key, account = made["key"], made["account_id"]
    debited = create_task(idle.url, key, text_to_image("charged"))
    refunded = create_task(idle.url, key, text_to_image("cancelled, so refunded"))
    assert cancel(idle.url, key, refunded).status_code == 200
    for amount, note in ((30, "top-up"), (-10, "taken back")):
        grant = {"account": account, "amount": amount, "note": note}
        assert http.post(f"{idle.url}/admin/credits/grant", json=grant, headers=ADMIN).is_success

    pages = every_page(idle, f"/admin/accounts/{account}/ledger", limit="2")
    assert [len(page) for page in pages] == [2, 2, 2]
    rows = [row for page in pages for row in page]
    assert [(row["kind"], row["amount"], row["balance_after"]) for row in rows] == [
        ("adjustment", -10, 115),
        ("grant", 30, 125),
        ("refund", 5, 95),
        ("debit", -5, 90),
        ("debit", -5, 95),
        ("grant", 100, 100),
    ]
    assert [row["task_id"] for row in rows] == [None, None, refunded, refunded, debited, None]
    assert [row["note"] for row in rows[:2]] == ["taken back", "top-up"]
    assert rows[-1]["note"] == "initial credits"
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids, reverse=True)
    assert all(row["created_at"].endswith("Z") for row in rows)
    whole = admin_get(idle, f"/admin/accounts/{account}/ledger")
    assert whole == {"items": rows, "next_cursor": None}

    assert "not found" in refused(idle, "/admin/accounts/acc_0000000000000000/ledger", 404)
    refused(idle, f"/admin/accounts/{made['key_id']}/ledger", 404)
    refused(idle, f"/admin/accounts/{account}/ledger", 422, cursor="nonsense")
    refused(idle, f"/admin/accounts/{account}/ledger", 422, limit="1000")


def test_every_task_filtered_and_paged(console: ServerProcess) -> None:
    made = new_key(console.url, name="tasks")
    key, account = made["key"], made["account_id"]
    other = new_key(console.url, name="someone else")["key"]
    callback = "http://user:secret@127.0.0.1:9/hook?token=abc"
    images = [
        create_task(console.url, key, {**text_to_image(f"image {n}"), "callback_url": callback})
        for n in range(3)
    ]
    video = create_task(console.url, key, {"model": VIDEO, "input": {"prompt": "a fox"}})
    theirs = create_task(console.url, other, text_to_image("not this account's"))
    for task_id in (*images, video):
        assert wait_done(console.url, key, task_id)["status"] == "SUCCESS"
    assert wait_done(console.url, other, theirs)["status"] == "SUCCESS"
    failed = _a_failed_task(console, key)
    ours = [failed, video, *reversed(images)]  # newest first

    pages = every_page(console, "/admin/tasks", account_id=account, limit="2")
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [item for page in pages for item in page]
    assert [item["task_id"] for item in listed] == ours
    assert all(item["account_id"] == account for item in listed)

    everyone = [item["task_id"] for page in every_page(console, "/admin/tasks") for item in page]
    assert theirs in everyone
    assert set(ours) <= set(everyone)
    assert everyone.index(theirs) > everyone.index(failed)

    def ids(**filters: str) -> list[str]:
        page = admin_get(console, "/admin/tasks", account_id=account, **filters)
        return [item["task_id"] for item in page["items"]]

    assert ids(status="FAILED") == [failed]
    assert ids(status="SUCCESS") == ours[1:]
    assert ids(status="IN_PROGRESS") == []
    assert ids(model=VIDEO) == [video]
    assert ids(model="grok-imagine/text-to-image", status="SUCCESS") == ours[2:]
    assert ids(provider="preview") == ours
    assert ids(provider="kie") == []

    # Created after / before a moment: API timestamps are whole seconds, and a task made
    # at 10:00:05.3 shows 10:00:05Z, so it is after that moment and before the next second.
    shown = {item["task_id"]: item for item in listed}
    first = shown[images[0]]["created_at"]
    assert images[0] in ids(created_after=first)
    assert images[0] not in ids(created_after=moment(first, 1))
    assert images[0] in ids(created_before=moment(first, 1))
    assert images[0] not in ids(created_before=first)
    last = shown[failed]["created_at"]
    window = ids(created_after=first, created_before=moment(last, 1))
    assert window == ours
    assert ids(created_after=moment(last, 1)) == []
    assert ids(created_after=first.replace("Z", "+00:00")) == ids(created_after=first)
    # The bound and the cursor together: the pages of a window never leave it.
    paged = every_page(
        console, "/admin/tasks", account_id=account, created_before=moment(last, 1), limit="1"
    )
    assert [item["task_id"] for page in paged for item in page] == ours

    image = shown[images[0]]
    assert image["status"] == "SUCCESS"
    assert image["model"] == "grok-imagine/text-to-image"
    assert image["provider"] == "preview"
    assert image["upstream_id"]
    assert image["consumed_credits"] == 5
    assert image["refunded"] is False
    assert image["error_message"] is None
    assert image["next_check_at"] is None
    assert image["completed_at"].endswith("Z")
    assert len(image["result_urls"]) == 1
    assert urlsplit(image["result_urls"][0]).path.startswith(f"/files/{images[0]}/")
    # The request as the status call shows it: no credentials, no query string.
    status = http.get(
        f"{console.url}/api/status", params={"task_id": images[0]}, headers=auth(key)
    ).json()["data"]
    assert image["request"] == status["request"]
    assert image["request"]["callback_url"] == "http://127.0.0.1:9/hook"
    assert "secret" not in str(image)
    assert "token=abc" not in str(image)
    assert isinstance(image["provider_state"], dict)
    gone = shown[failed]
    assert gone["status"] == "FAILED"
    assert gone["error_message"]
    assert gone["consumed_credits"] == 0
    assert gone["refunded"] is True
    assert gone["result_urls"] == []

    for params in (
        {"status": "DONE"},
        {"model": "paint"},
        {"created_after": "yesterday"},
        {"created_after": "2026-12-02T10:00:00"},  # no offset: which zone?
        {"created_before": "2026-13-02T10:00:00Z"},
        {"cursor": "nonsense"},
        {"limit": "0"},
        {"limit": "101"},
    ):
        message = refused(console, "/admin/tasks", 422, **params)
        assert message.startswith(next(iter(params))), message


def _a_failed_task(server: ServerProcess, key: str) -> str:
    """A task that fails at once: its source is no image (the server fetches it)."""
    with image_server() as images:
        body = {
            "model": "grok-imagine/image-to-video",
            "input": {"image_urls": [f"{images}/notes.txt"]},
        }
        task_id = create_task(server.url, key, body)
        assert wait_done(server.url, key, task_id)["status"] == "FAILED"
    return task_id


def test_a_providers_state_is_shown_without_what_could_be_secret() -> None:
    """What xai and kie keep (result links, which a bucket may presign) and what a
    provider might: keys named like secrets go, URLs lose credentials and query."""
    state = {
        "submitted_at": 1764700000.5,
        "complete": True,
        "result_urls": ["https://u:p@cdn.example/r/0.png?X-Amz-Signature=abc#f"],
        "callback_token": "tok",
        "api_key": "sk-1",
        "nested": {"Authorization": "Bearer x", "attempt": 2, "links": [{"url": "http://a/b?c"}]},
    }
    assert shown_state(state) == {
        "submitted_at": 1764700000.5,
        "complete": True,
        "result_urls": ["https://cdn.example/r/0.png"],
        "nested": {"attempt": 2, "links": [{"url": "http://a/b"}]},
    }


def test_one_task_of_any_account(console: ServerProcess) -> None:
    made = new_key(console.url, name="one task")
    task_id = create_task(console.url, made["key"], text_to_image("one"))
    wait_done(console.url, made["key"], task_id)
    shown = admin_get(console, f"/admin/tasks/{task_id}")
    assert shown["task_id"] == task_id
    assert shown["account_id"] == made["account_id"]
    listed = admin_get(console, "/admin/tasks", account_id=made["account_id"])["items"]
    assert listed == [shown]
    assert set(shown) == {
        "task_id",
        "account_id",
        "model",
        "status",
        "provider",
        "upstream_id",
        "provider_state",
        "attempts",
        "error_message",
        "consumed_credits",
        "refunded",
        "request",
        "result_urls",
        "created_at",
        "completed_at",
        "next_check_at",
    }
    assert "not found" in refused(console, f"/admin/tasks/{NO_TASK}", 404)
    refused(console, "/admin/tasks/not-a-task", 404)


def test_a_failed_delivery_is_retried_and_then_delivered(console: ServerProcess) -> None:
    made = new_key(console.url, name="webhooks")
    key, account = made["key"], made["account_id"]
    # Two refusals use up the schedule (a try and one retry): the delivery fails.
    with receiver(answers=(500, 500)) as hook:
        task_id = create_task(console.url, key, {**text_to_image("hook"), "callback_url": hook.url})
        wait_done(console.url, key, task_id)

        def deliveries(**filters: str) -> list[dict[str, Any]]:
            page = admin_get(console, "/admin/webhooks/deliveries", **filters)
            found: list[dict[str, Any]] = page["items"]
            return found

        eventually(
            lambda: [d["status"] for d in deliveries(task_id=task_id)] == ["failed"],
            "the delivery given up",
        )
        (failed,) = deliveries(task_id=task_id)
        assert failed["account_id"] == account
        assert failed["url"] == hook.url
        assert [attempt["status_code"] for attempt in failed["attempts"]] == [500, 500]
        assert failed["next_attempt_at"] is None
        assert failed["delivered_at"] is None
        assert failed in deliveries(status="failed", account_id=account)
        assert deliveries(status="delivered", account_id=account) == []
        user_view = http.get(
            f"{console.url}/api/webhooks", params={"task_id": task_id}, headers=auth(key)
        ).json()["data"]
        assert user_view == [{k: v for k, v in failed.items() if k != "account_id"}]

        retry = f"{console.url}/admin/webhooks/deliveries/{failed['id']}/retry"
        answer = http.post(retry, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        retried = answer.json()["data"]
        assert retried["id"] == failed["id"]
        assert retried["account_id"] == account
        # Pending again, due at once, or already being sent; its attempts are kept.
        assert retried["status"] in ("pending", "delivered")
        assert retried["attempts"][:2] == failed["attempts"]
        if retried["status"] == "pending":
            assert retried["next_attempt_at"] is not None

        eventually(
            lambda: [d["status"] for d in deliveries(task_id=task_id)] == ["delivered"],
            "the retried delivery delivered",
        )
        assert [got.answered for got in hook.received] == [500, 500, 204]
    (delivered,) = deliveries(task_id=task_id)
    assert [attempt["status_code"] for attempt in delivered["attempts"]] == [500, 500, 204]
    assert delivered["delivered_at"] is not None

    again = http.post(retry, headers=ADMIN)
    assert again.status_code == 409, again.text
    assert again.json()["data"] is None
    assert "delivered" in again.json()["message"]
    unknown = f"{console.url}/admin/webhooks/deliveries/msg_{'0' * 32}/retry"
    answer = http.post(unknown, headers=ADMIN)
    assert answer.status_code == 404
    assert answer.json()["data"] is None


def test_deliveries_filtered_and_paged(console: ServerProcess) -> None:
    made = new_key(console.url, name="many webhooks")
    key, account = made["key"], made["account_id"]
    with receiver() as hook:
        tasks = [
            create_task(console.url, key, {**text_to_image(f"{n}"), "callback_url": hook.url})
            for n in range(3)
        ]
        for task_id in tasks:
            wait_done(console.url, key, task_id)
        eventually(lambda: len(hook.received) == 3, "three webhooks received")

    def page_ids(**filters: str) -> list[str]:
        pages = every_page(console, "/admin/webhooks/deliveries", **filters)
        return [item["task_id"] for page in pages for item in page]

    # A delivery is queued as its task ends, so they are listed in the order tasks ended.
    eventually(
        lambda: sorted(page_ids(account_id=account, status="delivered")) == sorted(tasks),
        "the three deliveries delivered",
    )
    whole = admin_get(console, "/admin/webhooks/deliveries", account_id=account)
    assert whole["next_cursor"] is None
    created = [item["created_at"] for item in whole["items"]]
    assert created == sorted(created, reverse=True)
    pages = every_page(console, "/admin/webhooks/deliveries", account_id=account, limit="1")
    assert [len(page) for page in pages] == [1, 1, 1]
    assert [page[0] for page in pages] == whole["items"]
    assert page_ids(task_id=tasks[1]) == [tasks[1]]
    assert page_ids(task_id=tasks[1], account_id=account) == [tasks[1]]
    assert page_ids(task_id=tasks[1], account_id="acc_0000000000000000") == []
    assert page_ids(account_id=account, status="pending") == []
    everyone = page_ids(limit="2")
    assert set(tasks) <= set(everyone)
    assert len(everyone) == len(set(everyone))

    for params in ({"status": "lost"}, {"cursor": "nonsense"}, {"limit": "-1"}):
        refused(console, "/admin/webhooks/deliveries", 422, **params)


def test_the_queue_of_a_server_without_a_worker(idle: ServerProcess) -> None:
    before = admin_get(idle, "/admin/queue")
    assert set(before) == {
        "due",
        "in_progress",
        "oldest_due_at",
        "oldest_due_age_seconds",
        "webhook_backlog",
    }
    key = new_key(idle.url, name="queue")["key"]
    hook = "http://127.0.0.1:9/hook"  # nothing is sent: no sender runs here
    made = [
        create_task(idle.url, key, {**text_to_image(f"waits {n}"), "callback_url": hook})
        for n in range(3)
    ]
    assert cancel(idle.url, key, made[0]).status_code == 200  # its webhook is queued

    after = admin_get(idle, "/admin/queue")
    assert after["due"] == before["due"] + 2
    assert after["in_progress"] == before["in_progress"] + 2
    assert after["in_progress"] >= after["due"]
    assert after["webhook_backlog"] == before["webhook_backlog"] + 1
    assert after["oldest_due_at"] is not None
    assert after["oldest_due_at"].endswith("Z")
    oldest = admin_get(idle, f"/admin/tasks/{made[1]}")["created_at"]
    assert after["oldest_due_at"] <= oldest
    assert after["oldest_due_age_seconds"] >= 0
    due = admin_get(idle, "/admin/tasks", status="IN_PROGRESS", limit="100")["items"]
    waiting = [item for item in due if item["task_id"] in made]
    assert [item["task_id"] for item in waiting] == made[:0:-1]
    assert all(item["next_check_at"] and item["attempts"] == 0 for item in waiting)
    assert all(item["upstream_id"] is None for item in waiting)
    (queued,) = admin_get(idle, "/admin/webhooks/deliveries", task_id=made[0])["items"]
    assert queued["status"] == "pending"
    assert queued["attempts"] == []

"""Another account's task answers exactly like a task that does not exist, everywhere a
task id is taken, and no list shows another account's tasks.

One `serve --no-worker` server: a separate worker finishes the tasks the probes need
finished and is stopped before the in-progress task is created, which then stays in
progress for as long as the test needs (an API process alone renders nothing), whatever
the other account tries on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from imagine.ids import new_task_id
from tests.security.common import assert_error_envelope, deliveries
from tests.support.api import (
    auth,
    balance,
    create_task,
    generate,
    http,
    new_key,
    text_to_image,
    wait_done,
)
from tests.support.server import ServerProcess
from tests.support.worker import WorkerProcess

T2I = "grok-imagine/text-to-image"
T2V = "grok-imagine/text-to-video"
I2V = "grok-imagine/image-to-video"
UPSCALE = "grok-imagine/upscale"
SHARED_IDEMPOTENCY_KEY = "the-same-idempotency-key"


@dataclass(frozen=True)
class World:
    server: ServerProcess
    owner: str
    """The key of the account whose tasks are probed."""
    prober: str
    """The key of another account, probing them."""
    owner_tasks: dict[str, str]
    """What each of the owner's tasks is (finished image, video, running...) -> its id."""
    prober_task: str
    """A finished image task of the prober's own."""


def _cancel(server: ServerProcess, key: str, task_id: str) -> httpx.Response:
    return http.post(
        f"{server.url}/api/cancel", json={"task_id": task_id}, headers=auth(key), timeout=30
    )


@pytest.fixture(scope="module")
def world(quiet_server: ServerProcess) -> World:
    server = quiet_server
    worker = WorkerProcess(server.data_dir / "worker", server.worker_env()).start()
    owner = new_key(server.url, name="owner")["key"]
    prober = new_key(server.url, name="prober")["key"]
    image = generate(
        server.url,
        owner,
        {**text_to_image("owner's image"), "public": True},
    )
    assert image.status_code == 200, image.text
    tasks = {"finished image": image.json()["data"]["task_id"]}
    http.post(  # the same Idempotency-Key the prober will try
        f"{server.url}/api/generate",
        json=text_to_image("owner's keyed image"),
        headers={**auth(owner), "Idempotency-Key": SHARED_IDEMPOTENCY_KEY},
    ).raise_for_status()
    tasks["video"] = create_task(
        server.url, owner, {"model": T2V, "input": {"prompt": "owner's video"}}
    )
    tasks["failed image"] = create_task(server.url, owner, text_to_image("cancelled"))
    tasks["with a webhook"] = create_task(
        server.url,
        owner,
        {**text_to_image("hooked"), "callback_url": "https://hooks.example.invalid/owner"},
    )
    assert _cancel(server, owner, tasks["failed image"]).status_code == 200
    prober_task = create_task(server.url, prober, text_to_image("prober's own"))
    try:
        for name in ("finished image", "video", "with a webhook"):
            assert wait_done(server.url, owner, tasks[name])["status"] == "SUCCESS"
        assert wait_done(server.url, prober, prober_task)["status"] == "SUCCESS"
    finally:
        worker.stop()
    # No worker runs from here on, so it stays in progress.
    tasks["running image"] = create_task(server.url, owner, text_to_image("running"))
    return World(server, owner, prober, tasks, prober_task)


def _same_as_unknown(
    call: Callable[[str], httpx.Response], task_id: str, *, expected: int | None = None
) -> None:
    """`call` answers for the other account's task exactly as for a task id that does not
    exist: same status, same body once the id is substituted."""
    unknown = new_task_id()
    assert len(unknown) == len(task_id)
    theirs = call(task_id)
    missing = call(unknown)
    assert theirs.status_code == missing.status_code, (theirs.text, missing.text)
    if expected is not None:
        assert_error_envelope(theirs, expected)
    assert 400 <= theirs.status_code < 500, theirs.text
    assert theirs.text.replace(task_id, "<id>") == missing.text.replace(unknown, "<id>")
    assert theirs.headers["content-type"] == missing.headers["content-type"]


PROBES: dict[str, tuple[int | None, Callable[[World, str], httpx.Response]]] = {
    "GET /api/status": (
        404,
        lambda w, t: http.get(
            f"{w.server.url}/api/status", params={"task_id": t}, headers=auth(w.prober)
        ),
    ),
    "POST /api/status (body)": (
        404,
        lambda w, t: http.post(
            f"{w.server.url}/api/status", json={"task_id": t}, headers=auth(w.prober)
        ),
    ),
    "POST /api/status (query)": (
        404,
        lambda w, t: http.post(
            f"{w.server.url}/api/status", params={"task_id": t}, headers=auth(w.prober)
        ),
    ),
    "POST /api/cancel (body)": (
        404,
        lambda w, t: http.post(
            f"{w.server.url}/api/cancel", json={"task_id": t}, headers=auth(w.prober)
        ),
    ),
    "POST /api/cancel (query)": (
        404,
        lambda w, t: http.post(
            f"{w.server.url}/api/cancel", params={"task_id": t}, headers=auth(w.prober)
        ),
    ),
    "GET /api/webhooks?task_id=": (
        404,
        lambda w, t: http.get(
            f"{w.server.url}/api/webhooks", params={"task_id": t}, headers=auth(w.prober)
        ),
    ),
    "DELETE /api/gallery/{task_id}": (
        404,
        lambda w, t: http.delete(f"{w.server.url}/api/gallery/{t}", headers=auth(w.prober)),
    ),
    "image-to-video by input.task_id": (
        None,
        lambda w, t: generate(w.server.url, w.prober, {"model": I2V, "input": {"task_id": t}}),
    ),
    "image-to-video by input.task_id and index": (
        None,
        lambda w, t: generate(
            w.server.url, w.prober, {"model": I2V, "input": {"task_id": t, "index": 0}}
        ),
    ),
    "upscale by input.task_id": (
        None,
        lambda w, t: generate(w.server.url, w.prober, {"model": UPSCALE, "input": {"task_id": t}}),
    ),
}
TASKS = ["finished image", "video", "failed image", "running image", "with a webhook"]


@pytest.mark.parametrize("probe", list(PROBES))
@pytest.mark.parametrize("which", TASKS)
def test_another_accounts_task_answers_like_an_unknown_one(
    world: World, probe: str, which: str
) -> None:
    expected, call = PROBES[probe]
    task_id = world.owner_tasks[which]
    charges = expected is None  # the chaining probes would debit on success
    credits_before = balance(world.server.url, world.prober) if charges else 0
    owner_view = _owners_view(world, task_id)
    _same_as_unknown(lambda given: call(world, given), task_id, expected=expected)
    if charges:
        assert balance(world.server.url, world.prober) == credits_before
    # Nothing happened to the owner's task either (not cancelled, refunded, unpublished).
    assert _owners_view(world, task_id) == owner_view
    if which == "finished image":
        gallery = http.get(f"{world.server.url}/api/gallery", params={"limit": 100})
        assert task_id in {item["task_id"] for item in gallery.json()["data"]["items"]}


def _owners_view(world: World, task_id: str) -> dict[str, Any]:
    """The owner's task as their list shows it (a list never refreshes a task)."""
    answer = http.get(
        f"{world.server.url}/api/tasks", params={"limit": "100"}, headers=auth(world.owner)
    )
    assert answer.status_code == 200, answer.text
    (found,) = [item for item in answer.json()["data"]["items"] if item["task_id"] == task_id]
    assert isinstance(found, dict)
    return found


def test_the_probes_changed_nothing_of_the_owners(world: World) -> None:
    """After every probe: the running task was not cancelled, the public one is still in
    the gallery, and the owner was charged nothing more."""
    url, owner = world.server.url, world.owner
    history = _all_tasks(world.server, owner)
    by_id = {item["task_id"]: item for item in history}
    assert by_id[world.owner_tasks["running image"]]["status"] == "IN_PROGRESS"
    assert by_id[world.owner_tasks["failed image"]]["error_message"] == "cancelled by its owner"
    gallery = http.get(f"{url}/api/gallery", params={"limit": 100}).json()["data"]["items"]
    assert world.owner_tasks["finished image"] in {item["task_id"] for item in gallery}
    # Their own chaining still works: the ids are real, only not the prober's.
    upscale = generate(
        url, owner, {"model": UPSCALE, "input": {"task_id": world.owner_tasks["finished image"]}}
    )
    assert upscale.status_code == 200, upscale.text


def test_the_same_source_of_ones_own_is_accepted(world: World) -> None:
    """The chaining probes were refused for the owner's tasks, not for chaining itself."""
    answer = generate(
        world.server.url, world.prober, {"model": UPSCALE, "input": {"task_id": world.prober_task}}
    )
    assert answer.status_code == 200, answer.text


def _all_tasks(server: ServerProcess, key: str, **filters: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**filters, "limit": "2", **({"cursor": cursor} if cursor else {})}
        answer = http.get(f"{server.url}/api/tasks", params=params, headers=auth(key))
        assert answer.status_code == 200, answer.text
        page = answer.json()["data"]
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize(
    "filters",
    [{}, {"status": "SUCCESS"}, {"status": "IN_PROGRESS"}, {"status": "FAILED"}, {"model": T2I}],
    ids=["all", "success", "in-progress", "failed", "model"],
)
def test_lists_never_show_another_accounts_tasks(world: World, filters: dict[str, str]) -> None:
    theirs = set(world.owner_tasks.values())
    listed = {item["task_id"] for item in _all_tasks(world.server, world.prober, **filters)}
    assert not listed & theirs
    owner_listed = {item["task_id"] for item in _all_tasks(world.server, world.owner, **filters)}
    assert world.prober_task not in owner_listed
    if not filters:
        assert world.prober_task in listed
        assert theirs <= owner_listed


def test_webhook_deliveries_never_show_another_accounts(world: World) -> None:
    hooked = world.owner_tasks["with a webhook"]
    assert [d["task_id"] for d in deliveries(world.server.url, world.owner)] == [hooked]
    listed = deliveries(world.server.url, world.prober)
    assert hooked not in {delivery["task_id"] for delivery in listed}


def test_an_idempotency_key_is_the_callers_own(world: World) -> None:
    """The owner's Idempotency-Key, used by another account with the same body, makes a
    new task for that account (no replay of the owner's task), and with another body it
    is no conflict either: nothing tells that someone else used the key."""
    url = world.server.url
    headers = {**auth(world.prober), "Idempotency-Key": SHARED_IDEMPOTENCY_KEY}
    owner_ids = set(world.owner_tasks.values()) | {
        item["task_id"] for item in _all_tasks(world.server, world.owner)
    }
    credits_before = balance(url, world.prober)
    same = http.post(
        f"{url}/api/generate", json=text_to_image("owner's keyed image"), headers=headers
    )
    assert same.status_code == 200, same.text
    assert "idempotent-replayed" not in same.headers
    assert same.json()["data"]["task_id"] not in owner_ids
    assert balance(url, world.prober) == credits_before - 5
    other_headers = {**auth(world.prober), "Idempotency-Key": SHARED_IDEMPOTENCY_KEY + "-2"}
    owner_again = http.post(
        f"{url}/api/generate",
        json=text_to_image("owner's second keyed image"),
        headers={**auth(world.owner), "Idempotency-Key": SHARED_IDEMPOTENCY_KEY + "-2"},
    )
    assert owner_again.status_code == 200, owner_again.text
    different = http.post(
        f"{url}/api/generate", json=text_to_image("something else"), headers=other_headers
    )
    assert different.status_code == 200, different.text
    assert different.json()["data"]["task_id"] != owner_again.json()["data"]["task_id"]

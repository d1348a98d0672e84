"""Providers misbehaving in every way at once: every task still ends, in time, with the
right refund, and the server keeps to its upstream call budget.

One server routes text-to-image to kie then xAI, and text-to-video to xAI then kie, both
the fakes over real sockets. A share of their create and poll calls answer 500, 429 with
Retry-After, hang past the server's timeout, reset the connection, or send malformed JSON;
a share of the tasks made upstream never finish, fail upstream, succeed without result
URLs, have a result URL that answers 404, or a result that trickles in a byte every two
seconds. The task deadline is short.

The server's promise, checked for every task: it ends (SUCCESS or FAILED) no later than
its deadline plus a little slack (the slack covers one worker step in flight at the
deadline and a status read), a FAILED task is refunded (consumed_credits 0) and a SUCCESS
charged once, and a task whose last upstream task was broken does not succeed. And for
each provider and operation: no one-second window holds more calls than the configured
leaky bucket lets through (a full bucket plus what drains in that second), counted where
the calls arrive. The server's HTTP client sends a GET whose connection was reset once
more at once, on its own; those resends are counted (`resent_after_reset`) and left out
of the budget, which bounds the calls the server decides to make.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.harness import (
    FINAL,
    PRICES,
    budget_use,
    seconds_to_finish,
    wait_all_final,
)
from tests.support.api import auth, create_task, new_key
from tests.support.databases import ledger_problems
from tests.support.fake_kie import FakeKie
from tests.support.fake_upstream import TASK_FAULTS, Answer, FakeUpstream, Fault
from tests.support.fake_xai import FakeXai
from tests.support.upstreams import kie_env, start_server, xai_env

pytestmark = pytest.mark.chaos

DEADLINE = 25
"""IMAGINE_TASK_DEADLINE, seconds."""
SLACK = 10
"""Seconds past its deadline by which every task must have ended."""
TIMEOUT = 2
"""IMAGINE_KIE_TIMEOUT and IMAGINE_XAI_TIMEOUT, seconds per call."""
RATES = {"create": (4, 1.0), "poll": (6, 1.0)}
"""The call budgets given to both providers: calls per seconds."""
IMAGES, VIDEOS = 24, 12
CREDITS = 1000
DEADLINE_WORDS = f"did not finish within {DEADLINE} seconds"


def call_faults() -> list[Fault]:
    return [
        Fault("500", 0.06, Answer(status=500, message="Server Error")),
        Fault("429", 0.05, Answer(status=429, message="Rate limit exceeded", retry_after=1)),
        Fault("hang", 0.04, Answer(status=500, message="too late", delay=TIMEOUT + 2)),
        Fault("reset", 0.04, Answer(reset=True)),
        Fault("malformed", 0.05, Answer(status=200, raw=b'{"code": 200, "data": {"taskId"')),
    ]


def break_calls(fake: FakeUpstream, seed: int) -> None:
    """Every fault once at the start of each operation, then each at random."""
    fake.random.seed(seed)
    for operation in ("create", "poll"):
        faults = call_faults()
        fake.faults[operation] = faults
        fake.script(operation, *(fault.answer for fault in faults))
    fake.next_task_faults.extend(TASK_FAULTS)
    fake.task_faults = dict.fromkeys(TASK_FAULTS, 0.05)


def injected(fake: FakeUpstream) -> dict[str, int]:
    """Faults met by kind: the random ones and the scripted ones that were used."""
    found = Counter(fake.faults_injected)
    for operation in ("create", "poll"):
        faults = call_faults()
        used = len(faults) - len(fake.scripts.get(operation, ()))
        for fault in faults[:used]:
            found[f"{operation}:{fault.kind}"] += 1
    return dict(sorted(found.items()))


@pytest.fixture
def kie() -> Iterator[FakeKie]:
    with FakeKie(task_seconds=3, callbacks=False) as fake:
        yield fake


@pytest.fixture
def xai() -> Iterator[FakeXai]:
    with FakeXai(task_seconds=3) as fake:
        yield fake


def _rate(name: str) -> str:
    calls, seconds = RATES[name]
    return f"{calls}/{seconds:g}s"


def test_every_task_ends_in_time_with_the_right_refund_whatever_the_providers_do(
    tmp_path: Path, kie: FakeKie, xai: FakeXai, figures: dict[str, Any]
) -> None:
    seed = int(os.environ.get("IMAGINE_CHAOS_SEED", random.randrange(1 << 30)))
    figures["seed"] = seed
    break_calls(kie, seed)
    break_calls(xai, seed + 1)
    env = {
        **kie_env(
            kie,
            IMAGINE_KIE_TIMEOUT=str(TIMEOUT),
            IMAGINE_KIE_CREATE_RATE=_rate("create"),
            IMAGINE_KIE_POLL_RATE=_rate("poll"),
        ),
        **xai_env(
            xai,
            IMAGINE_XAI_TIMEOUT=str(TIMEOUT),
            IMAGINE_XAI_CREATE_RATE=_rate("create"),
            IMAGINE_XAI_POLL_RATE=_rate("poll"),
        ),
        "IMAGINE_PROVIDER": "kie",
        "IMAGINE_ROUTES": "text-to-image=kie,xai; text-to-video=xai,kie",
        "IMAGINE_FAILOVER_AFTER": "2",
        "IMAGINE_TASK_DEADLINE": str(DEADLINE),
    }
    server = start_server(tmp_path / "faults", env, public=False)
    database = tmp_path / "faults" / "imagine.db"
    started = time.monotonic()
    try:
        key = new_key(server.url, credits=CREDITS)["key"]
        models: dict[str, str] = {}
        prompts: dict[str, str] = {}
        for number in range(IMAGES + VIDEOS):
            model = (
                "grok-imagine/text-to-video" if number % 3 == 2 else "grok-imagine/text-to-image"
            )
            prompt = f"faulty upstream {number}"
            task_id = create_task(server.url, key, {"model": model, "input": {"prompt": prompt}})
            models[task_id], prompts[task_id] = model, prompt
        # A client polling every task once a second, as clients do, until all have ended
        # (bounded well past the deadline, so that a task that never ends fails the test
        # rather than hanging it).
        final = wait_all_final(server.url, key, models, timeout=DEADLINE + SLACK + 60)
        balance = httpx.get(f"{server.url}/api/credits", headers=auth(key), timeout=30)
        assert balance.status_code == 200, balance.text
    finally:
        server.stop()

    # The upstream task each of ours ended on: the last one made for its prompt.
    made = sorted([*kie.task_log, *xai.task_log])
    last_fault = {prompt: fault for _, prompt, fault in made}
    by_status = Counter(str(data.get("status")) for data in final.values())
    durations = {
        task_id: seconds_to_finish(data)
        for task_id, data in final.items()
        if data["status"] in FINAL
    }
    budget: dict[str, dict[str, Any]] = {}
    for name, fake in (("kie", kie), ("xai", xai)):
        for operation, (calls, seconds) in RATES.items():
            budget[f"{name}:{operation}"] = budget_use(fake, operation, calls, seconds)
    outcomes: dict[str, Counter[str]] = {}
    for task_id, data in final.items():
        shown = last_fault.get(prompts[task_id]) or "none"
        seen = "SUCCESS" if data["status"] == "SUCCESS" else str(data.get("error_message"))
        outcomes.setdefault(shown, Counter())[seen[:60]] += 1
    figures.update(
        {
            "tasks_created": len(models),
            "outcome_by_upstream_fault": {name: dict(seen) for name, seen in outcomes.items()},
            "tasks_by_status": dict(by_status),
            "faults_injected": {"kie": injected(kie), "xai": injected(xai)},
            "upstream_tasks": {"kie": len(kie.task_log), "xai": len(xai.task_log)},
            "upstream_calls": budget,
            "result_downloads": {"kie": kie.result_downloads, "xai": xai.result_downloads},
            "slowest_task_s": max(durations.values(), default=None),
            "deadline_s": DEADLINE,
            "seconds": round(time.monotonic() - started, 1),
        }
    )

    unfinished = {
        task_id: last_fault.get(prompts[task_id])
        for task_id in models
        if final.get(task_id, {}).get("status") not in FINAL
    }
    assert not unfinished, (
        f"{len(unfinished)} tasks never ended (task: its upstream fault): {unfinished}"
    )
    late = {
        task_id: (seconds, last_fault.get(prompts[task_id]))
        for task_id, seconds in durations.items()
        if seconds > DEADLINE + SLACK
    }
    assert not late, f"tasks that ended past deadline + {SLACK} s (seconds, fault): {late}"

    spent = 0
    for task_id, data in final.items():
        fault = last_fault.get(prompts[task_id])
        message = str(data["error_message"])
        if data["status"] == "SUCCESS":
            assert fault is None, (task_id, fault, data)
            assert data["consumed_credits"] == PRICES[models[task_id]], data
            assert data["response"]["resultUrls"], data
            spent += PRICES[models[task_id]]
            continue
        assert data["consumed_credits"] == 0, data
        if fault in ("stuck", "no_results"):
            assert DEADLINE_WORDS in message, (task_id, fault, message)
        elif fault == "fail":
            # Unless the deadline came before the server saw the upstream failure.
            assert "could not generate" in message or DEADLINE_WORDS in message, (
                task_id,
                fault,
                message,
            )
        elif fault == "missing_result":
            assert "404" in message or DEADLINE_WORDS in message, (task_id, fault, message)
        elif fault is None:
            # Nothing wrong with the task itself: only the calls kept failing.
            assert DEADLINE_WORDS in message, (task_id, fault, message)
    assert ledger_problems(database) == []
    assert balance.json()["data"]["balance"] == CREDITS - spent
    assert by_status["SUCCESS"] > 0, "nothing succeeded: the faults left nothing to compare"

    over = {
        name: found
        for name, found in budget.items()
        if found["most_in_1s_without_resends"] > found["allowed_in_1s"]
    }
    assert not over, f"upstream calls over the configured budget: {over}"

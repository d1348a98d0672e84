"""Servers configured against the fake upstreams, as an operator would configure them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import httpx

from tests.support.fake_kie import FakeKie
from tests.support.fake_xai import FakeXai
from tests.support.server import ServerProcess


def kie_env(fake: FakeKie, **more: str) -> dict[str, str]:
    return {
        "IMAGINE_KIE_API_KEY": fake.api_key,
        "IMAGINE_KIE_BASE_URL": fake.url,
        **({"IMAGINE_KIE_WEBHOOK_KEY": fake.webhook_key} if fake.webhook_key else {}),
        **more,
    }


def xai_env(fake: FakeXai, **more: str) -> dict[str, str]:
    return {"IMAGINE_XAI_API_KEY": fake.api_key, "IMAGINE_XAI_BASE_URL": fake.url, **more}


def start_server(data_dir: Path, env: dict[str, str], *, public: bool = True) -> ServerProcess:
    """A server whose IMAGINE_PUBLIC_URL is its own address (so upstream callbacks reach it)
    when `public`; without, kie gets no callback URL and polling does all the work."""
    server = ServerProcess(data_dir, env)
    if public:
        server.env["IMAGINE_PUBLIC_URL"] = server.url
    return server.start()


class Scraped(Protocol):
    url: str


def metric(server: Scraped, name: str, **labels: str) -> float:
    """One sample of the server's (or a worker's) /metrics (0 when it has not been counted
    yet)."""
    text = httpx.get(f"{server.url}/metrics").text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if found == wanted:
            return float(match.group(3))
    return 0.0


def metric_total(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (any others)."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = set((match.group(2) or "").split(","))
        if all(f'{key}="{value}"' in found for key, value in labels.items()):
            total += float(match.group(3))
    return total


def most_in_any_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most moments that fall in any half-open interval of `window` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most

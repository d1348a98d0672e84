"""Configuring providers: routes, credentials, mistakes that stop the start in one line,
and `imagine providers check` / GET /admin/providers for the operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.api import auth
from tests.support.fake_kie import FakeKie
from tests.support.fake_upstream import free_port
from tests.support.fake_xai import FakeXai
from tests.support.server import ADMIN_TOKEN
from tests.support.upstreams import kie_env, start_server, xai_env


def imagine(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "imagine", *args, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200", **env},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"IMAGINE_PROVIDER": "kie"},
            "error: invalid setting IMAGINE_KIE_API_KEY: required, since a route uses kie "
            "(IMAGINE_PROVIDER or IMAGINE_ROUTES)",
        ),
        (
            {"IMAGINE_ROUTES": "text-to-video=preview,xai"},
            "error: invalid setting IMAGINE_XAI_API_KEY: required, since a route uses xai "
            "(IMAGINE_PROVIDER or IMAGINE_ROUTES)",
        ),
        (
            {"IMAGINE_ROUTES": "upscale=xai", "IMAGINE_XAI_API_KEY": "k"},
            "error: invalid setting IMAGINE_ROUTES: xai can't serve grok-imagine/upscale; "
            "route it to a provider that can",
        ),
        (
            {"IMAGINE_PROVIDER": "fal"},
            "error: invalid setting IMAGINE_PROVIDER: unknown provider 'fal'; "
            "use kie, local, preview, xai",
        ),
        (
            {"IMAGINE_ROUTES": "paint=kie"},
            "error: invalid setting IMAGINE_ROUTES: unknown model 'paint'; use one of "
            "grok-imagine/text-to-image, grok-imagine/text-to-video, "
            "grok-imagine/image-to-video, grok-imagine/upscale",
        ),
        (
            {"IMAGINE_ROUTES": "upscale"},
            "error: invalid setting IMAGINE_ROUTES: 'upscale' is not model=provider[,provider...]",
        ),
        (
            {
                "IMAGINE_PROVIDER": "kie",
                "IMAGINE_KIE_API_KEY": "k",
                "IMAGINE_KIE_POLL_RATE": "fast",
            },
            "error: invalid setting IMAGINE_KIE_POLL_RATE: write the rate as CALLS/SECONDS, "
            "for example 20/10s or 10/s",
        ),
        (
            {
                "IMAGINE_PROVIDER": "kie",
                "IMAGINE_KIE_API_KEY": "k",
                "IMAGINE_KIE_CALLBACKS": "true",
            },
            "error: invalid setting IMAGINE_KIE_CALLBACKS: kie can only call back a public "
            "address; set IMAGINE_PUBLIC_URL too",
        ),
    ],
    ids=[
        "kie-key",
        "xai-key",
        "xai-upscale",
        "unknown-provider",
        "unknown-model",
        "syntax",
        "rate",
        "callbacks",
    ],
)
def test_a_route_that_cannot_run_stops_the_start_with_one_line(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        done = imagine(tmp_path, *command, env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip() == line
        assert "Traceback" not in done.stdout + done.stderr


def test_providers_check_reports_reachability_and_the_kie_balance(tmp_path: Path) -> None:
    with FakeKie() as kie, FakeXai() as xai:
        env = {**kie_env(kie), **xai_env(xai), "IMAGINE_ROUTES": "text-to-image=kie,xai"}
        done = imagine(tmp_path, "providers", "check", "--json", env=env)
        assert done.returncode == 0, done.stderr
        report = {row["name"]: row for row in json.loads(done.stdout)}
        assert report["kie"]["ok"] is True
        assert report["kie"]["balance"] == 1000
        assert report["kie"]["routed_models"] == ["grok-imagine/text-to-image"]
        assert report["xai"]["ok"] is True
        assert report["preview"]["routed_models"] == [
            "grok-imagine/text-to-video",
            "grok-imagine/image-to-video",
            "grok-imagine/upscale",
        ]

        table = imagine(tmp_path, "providers", "check", env=env)
        assert table.returncode == 0
        assert "credentials accepted" in table.stdout

        wrong = {**env, "IMAGINE_KIE_API_KEY": "wrong"}
        done = imagine(tmp_path, "providers", "check", "--json", env=wrong)
        assert done.returncode == 1
        kie_row = next(row for row in json.loads(done.stdout) if row["name"] == "kie")
        assert kie_row["ok"] is False
        assert kie_row["reachable"] is True
        assert "credentials" in kie_row["detail"]
        # xAI answers a bad key with a 400; it still reads as the operator's problem.
        bad_xai = {**env, "IMAGINE_XAI_API_KEY": "x"}
        done = imagine(tmp_path, "providers", "check", "--json", env=bad_xai)
        xai_row = next(row for row in json.loads(done.stdout) if row["name"] == "xai")
        assert "refused this server's credentials" in xai_row["detail"]

    gone = {"IMAGINE_PROVIDER": "kie", "IMAGINE_KIE_API_KEY": "k"}
    gone["IMAGINE_KIE_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    done = imagine(tmp_path, "providers", "check", "--json", env=gone)
    assert done.returncode == 1
    kie_row = next(row for row in json.loads(done.stdout) if row["name"] == "kie")
    assert kie_row == {**kie_row, "ok": False, "reachable": False}
    assert "could not reach kie" in kie_row["detail"]


def test_admin_providers_endpoint(tmp_path: Path) -> None:
    with FakeKie() as kie:
        server = start_server(tmp_path / "admin", kie_env(kie, IMAGINE_PROVIDER="kie"))
        try:
            answer = httpx.get(f"{server.url}/admin/providers", headers=auth(ADMIN_TOKEN))
            assert answer.status_code == 200
            kie_row = next(row for row in answer.json()["data"] if row["name"] == "kie")
            assert kie_row["ok"] is True
            assert kie_row["balance"] == 1000
            assert len(kie_row["routed_models"]) == 4
            refused = httpx.get(f"{server.url}/admin/providers", headers=auth("nope"))
            assert refused.status_code == 401
        finally:
            server.stop()

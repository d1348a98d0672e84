"""Storage settings that can't work stop the start with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.api import create_task, new_key, wait_done
from tests.support.server import ServerProcess, free_port

S3 = {"IMAGINE_STORAGE_URL": "s3://results-bucket/imagine"}


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({"IMAGINE_STORAGE_URL": "gs://bucket/x"}, "IMAGINE_STORAGE_URL", "s3://bucket/prefix"),
        ({"IMAGINE_STORAGE_URL": "s3://B!/x"}, "IMAGINE_STORAGE_URL", "not a bucket name"),
        ({"IMAGINE_STORAGE_URL": "s3://bucket/a/../b"}, "IMAGINE_STORAGE_URL", ". or .."),
        (
            {**S3, "IMAGINE_S3_ENDPOINT_URL": "minio:9000"},
            "IMAGINE_S3_ENDPOINT_URL",
            "http:// or https://",
        ),
        (
            {**S3, "IMAGINE_S3_ENDPOINT_URL": "http://key:secret@minio:9000"},
            "IMAGINE_S3_ENDPOINT_URL",
            "AWS_* variables",
        ),
        (
            {"IMAGINE_STORAGE_PUBLIC_URL": "https://cdn.example.com"},
            "IMAGINE_STORAGE_PUBLIC_URL",
            "needs IMAGINE_STORAGE_URL=s3://",
        ),
        (
            {"IMAGINE_STORAGE_PRESIGN_SECONDS": "600"},
            "IMAGINE_STORAGE_PRESIGN_SECONDS",
            "needs IMAGINE_STORAGE_URL=s3://",
        ),
        (
            {**S3, "IMAGINE_STORAGE_PRESIGN_SECONDS": "0"},
            "IMAGINE_STORAGE_PRESIGN_SECONDS",
            "greater than or equal to 1",
        ),
        (
            {
                **S3,
                "IMAGINE_STORAGE_PUBLIC_URL": "https://cdn.example.com",
                "IMAGINE_STORAGE_PRESIGN_SECONDS": "600",
            },
            "IMAGINE_STORAGE_PRESIGN_SECONDS",
            "choose one",
        ),
    ],
)
def test_bad_storage_settings_stop_the_start_with_one_line(
    tmp_path: Path, env: dict[str, str], variable: str, reason: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "AWS_"))}
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "imagine", *command, "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            env={**clean, "COLUMNS": "200", **env},
            timeout=60,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: invalid setting {variable}:"), lines[0]
        assert reason in lines[0]
        assert "secret" not in lines[0]


def test_a_folder_as_storage_url_keeps_results_there(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    with ServerProcess(tmp_path / "d", {"IMAGINE_STORAGE_URL": str(folder)}) as server:
        key = new_key(server.url)["key"]
        data = wait_done(server.url, key, create_task(server.url, key, {"input": {"prompt": "x"}}))
        [url] = data["response"]["resultUrls"]
        task_id = url.split("/")[-2]
        assert (folder / task_id / "0.png").is_file()
        assert not (tmp_path / "d" / "files" / task_id).exists()
        assert httpx.get(url).content == (folder / task_id / "0.png").read_bytes()

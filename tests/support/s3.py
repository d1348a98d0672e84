"""A real S3-compatible server on loopback: moto's standalone server, as its own process."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx
import obstore
from obstore.store import S3Store

from tests.support.running import Running
from tests.support.server import free_port

REGION = "us-east-1"
ACCESS_KEY_ID = "AKIATESTSTORAGE00001"
# A value no test sends anywhere but in AWS_SECRET_ACCESS_KEY, so finding it in a log or
# an answer proves it leaked.
SECRET_ACCESS_KEY = "storage-secret-" + secrets.token_hex(12)


class MotoServer(Running):
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited early:\n{self.log_path.read_text()}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"moto did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def create_bucket(self, *, public: bool = False) -> str:
        """A new bucket; a public one lets anyone read its objects, as a CDN origin would."""
        bucket = "imagine-" + secrets.token_hex(6)
        httpx.put(f"{self.url}/{bucket}", timeout=30).raise_for_status()
        if public:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                ],
            }
            httpx.put(
                f"{self.url}/{bucket}?policy", content=json.dumps(policy), timeout=30
            ).raise_for_status()
        return bucket

    def object(self, bucket: str, key: str) -> tuple[bytes, str | None]:
        """An object's bytes and content type, as the bucket itself has them."""
        store = S3Store(
            bucket,
            endpoint=self.url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            client_options={"allow_http": True},
        )
        found = obstore.get(store, key)
        return bytes(found.bytes()), found.attributes.get("Content-Type")

    def sizes(self, bucket: str, prefix: str) -> dict[str, int]:
        """The size of every object under `prefix`, by key: one listing, however many."""
        store = S3Store(
            bucket,
            endpoint=self.url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            client_options={"allow_http": True},
        )
        return {
            meta["path"]: meta["size"]
            for batch in obstore.list(store, prefix=prefix)
            for meta in batch
        }

    def env(self, bucket: str, prefix: str = "results") -> dict[str, str]:
        """The settings of a server whose results go to `bucket` under `prefix`."""
        return {
            "IMAGINE_STORAGE_URL": f"s3://{bucket}/{prefix}",
            "IMAGINE_S3_ENDPOINT_URL": self.url,
            "IMAGINE_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

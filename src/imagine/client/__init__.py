"""The Python SDK of an imagine server: generate images and videos, wait for them, fetch
the results. Loads nothing of the server (only httpx and the standard library).

```python
import imagine.client

task = imagine.client.run("A majestic dragon over a neon city")   # waits; raises if FAILED
print(task.result_urls)
task.download("out/")
```
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from imagine.client._client import AsyncClient, Client
from imagine.client._core import DEFAULT_MAX_RETRIES, DEFAULT_MODEL, DEFAULT_TIMEOUT
from imagine.client._errors import (
    AuthenticationError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    ImagineError,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    TaskFailed,
    WaitTimeout,
)
from imagine.client._models import Account, AsyncTask, BaseTask, Model, Task, TaskStatus
from imagine.client.config import Login, load_login, login_path, remove_login, save_login

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "Account",
    "AsyncClient",
    "AsyncTask",
    "AuthenticationError",
    "BaseTask",
    "Client",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "ImagineError",
    "InsufficientCredits",
    "InvalidRequest",
    "Login",
    "Model",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Task",
    "TaskFailed",
    "TaskStatus",
    "WaitTimeout",
    "default_client",
    "load_login",
    "login_path",
    "remove_login",
    "run",
    "save_login",
]

_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The module's shared `Client`, configured from the environment or the login file;
    made on first use, closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
            atexit.register(_default.close)
        return _default


def run(
    prompt: str | None = None,
    *,
    model: str = DEFAULT_MODEL,
    image_urls: str | Sequence[str] | None = None,
    task_id: str | None = None,
    callback_url: str | None = None,
    public: bool = False,
    options: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Task:
    """`Client.run` on the `default_client()`: generate, wait, return the finished task;
    raises `TaskFailed` if it ended FAILED.

    ```python
    task = imagine.client.run("a red fox in snow", options={"aspect_ratio": "3:2"})
    ```
    """
    return default_client().run(
        prompt,
        model=model,
        image_urls=image_urls,
        task_id=task_id,
        callback_url=callback_url,
        public=public,
        options=options,
        idempotency_key=idempotency_key,
        timeout=timeout,
    )

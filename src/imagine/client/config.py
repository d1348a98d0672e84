"""Where the SDK finds its server and key, and the stored login that `imagine login` writes.

Order of precedence, first found wins:

1. the arguments (`Client(api_key=..., base_url=...)`);
2. the environment: `IMAGINE_API_KEY`, `IMAGINE_BASE_URL`;
3. the login file: JSON `{"base_url": ..., "api_key": ...}` at `login_path()`;
4. the default base URL, `http://127.0.0.1:8000` (and no key).

The login file's key is used only with the login file's own server: a client pointed
elsewhere (by argument or environment) never sends it there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from imagine.client._errors import ConfigError

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_KEY_ENV = "IMAGINE_API_KEY"
BASE_URL_ENV = "IMAGINE_BASE_URL"
LOGIN_FILE = "login.json"


@dataclass(frozen=True)
class Login:
    """A stored login: the server and the key to use there."""

    base_url: str
    api_key: str


def config_dir() -> Path:
    """The user's configuration folder for imagine: `$XDG_CONFIG_HOME/imagine` (else
    `~/.config/imagine`) on Linux and other Unixes, `~/Library/Application Support/imagine`
    on macOS, `%APPDATA%\\imagine` on Windows."""
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        # The XDG spec: a relative path is invalid and is to be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "imagine"


def login_path() -> Path:
    """The login file: `config_dir() / "login.json"`.

    ```python
    >>> login_path()
    PosixPath('/home/me/.config/imagine/login.json')
    ```
    """
    return config_dir() / LOGIN_FILE


def normalize_base_url(url: str) -> str:
    """`url` without surrounding blanks and trailing slashes."""
    return url.strip().rstrip("/")


def save_login(base_url: str, api_key: str) -> Path:
    """Store the server and key for later clients; returns the file's path.

    The folder is made private (0700) and the file is written with mode 0600, created
    so from the start and swapped in whole, so the key is never readable by others.

    ```python
    save_login("https://imagine.example.com", "im_...")
    ```
    """
    path = login_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform != "win32":
        path.parent.chmod(0o700)
    content = json.dumps({"base_url": normalize_base_url(base_url), "api_key": api_key.strip()})
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(content + "\n")
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return path


def load_login() -> Login | None:
    """The stored login, or None when there is none. Raises `ConfigError` for a file
    that is not `{"base_url": "...", "api_key": "..."}`."""
    path = login_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: can't be read ({exc.strerror})") from exc
    try:
        stored = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON; log in again or delete it") from exc
    if not isinstance(stored, dict):
        raise ConfigError(f"{path}: not a JSON object; log in again or delete it")
    base_url, api_key = stored.get("base_url"), stored.get("api_key")
    if not isinstance(base_url, str) or not isinstance(api_key, str) or not base_url:
        raise ConfigError(f"{path}: needs base_url and api_key; log in again or delete it")
    return Login(base_url=normalize_base_url(base_url), api_key=api_key)


def remove_login() -> bool:
    """Delete the stored login; True if there was one."""
    try:
        login_path().unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(base_url: str | None = None, api_key: str | None = None) -> tuple[str, str | None]:
    """The base URL and key a client uses, by the order of precedence above."""
    chosen_url = base_url or os.environ.get(BASE_URL_ENV) or None
    chosen_key = api_key or os.environ.get(API_KEY_ENV) or None
    if chosen_url is not None and chosen_key is not None:
        return normalize_base_url(chosen_url), chosen_key
    login = load_login()
    if chosen_url is None:
        chosen_url = login.base_url if login is not None else DEFAULT_BASE_URL
    chosen_url = normalize_base_url(chosen_url)
    if chosen_key is None and login is not None and login.base_url == chosen_url:
        chosen_key = login.api_key
    return chosen_url, chosen_key

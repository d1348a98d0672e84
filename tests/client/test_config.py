"""Configuration: arguments, then the environment, then the login file; the login file's
place and permissions; the key never sent to a server it wasn't stored for."""

from __future__ import annotations

import ast
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import imagine.client
from imagine.client import Client, ConfigError, load_login, login_path, remove_login, save_login
from imagine.client.config import DEFAULT_BASE_URL, Login, resolve
from tests.client.support import Answer, ScriptedServer, envelope


def test_the_login_file_lives_in_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert login_path() == tmp_path / "xdg" / "imagine" / "login.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert login_path() == tmp_path / "home" / ".config" / "imagine" / "login.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert login_path() == tmp_path / "home" / ".config" / "imagine" / "login.json"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_save_load_remove(tmp_path: Path) -> None:
    assert load_login() is None
    path = save_login("http://imagine.test:9000/", "im_secret")
    assert path == login_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "base_url": "http://imagine.test:9000",
        "api_key": "im_secret",
    }
    assert load_login() == Login("http://imagine.test:9000", "im_secret")
    save_login("http://other.test", "im_other")  # replaces it whole
    assert load_login() == Login("http://other.test", "im_other")
    assert [item.name for item in path.parent.iterdir()] == ["login.json"]
    assert remove_login() is True
    assert remove_login() is False
    assert load_login() is None


def test_a_broken_login_file_is_a_config_error() -> None:
    login_path().parent.mkdir(parents=True)
    for content in ("{not json", "[1]", '{"base_url": "http://x"}'):
        login_path().write_text(content)
        with pytest.raises(ConfigError, match=r"login\.json"):
            load_login()


def test_arguments_then_environment_then_login(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve() == (DEFAULT_BASE_URL, None)
    save_login("http://stored.test", "im_stored")
    assert resolve() == ("http://stored.test", "im_stored")
    monkeypatch.setenv("IMAGINE_API_KEY", "im_env")
    assert resolve() == ("http://stored.test", "im_env")
    monkeypatch.setenv("IMAGINE_BASE_URL", "http://env.test/")
    assert resolve() == ("http://env.test", "im_env")
    assert resolve("http://arg.test", "im_arg") == ("http://arg.test", "im_arg")
    monkeypatch.delenv("IMAGINE_API_KEY")
    # The stored key belongs to the stored server: never sent to another one.
    assert resolve() == ("http://env.test", None)
    assert resolve("http://stored.test/") == ("http://stored.test", "im_stored")


def test_a_client_uses_the_stored_login_and_keeps_the_key_to_its_server() -> None:
    credits = Answer(200, envelope({"account_id": "acc_1", "balance": 3}))
    with ScriptedServer(lambda seen: credits) as fake:
        save_login(fake.url, "im_stored")
        with Client() as client:
            assert client.base_url == fake.url
            assert client.balance() == 3
        assert fake.seen[-1].headers["authorization"] == "Bearer im_stored"
        assert fake.seen[-1].headers["user-agent"].startswith("imagine-python/")
        with ScriptedServer(lambda seen: credits) as other, Client(base_url=other.url) as c:
            c.balance()
        assert "authorization" not in other.seen[-1].headers


def test_importing_the_sdk_loads_nothing_of_the_server() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "import imagine.client, sys; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = ast.literal_eval(shown.stdout)
    server_side = ("fastapi", "starlette", "sqlalchemy", "av", "PIL", "asyncpg", "uvicorn")
    assert [name for name in loaded if name.split(".")[0] in server_side] == []
    assert "imagine.client" in loaded
    assert not [name for name in loaded if name.startswith("imagine.") and "client" not in name]


def test_the_public_names_are_sorted_and_exported() -> None:
    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert imagine.client.__all__ == sorted(imagine.client.__all__, key=isort_style)
    for name in imagine.client.__all__:
        assert hasattr(imagine.client, name)
    public = {name for name in dir(imagine.client) if not name.startswith("_")}
    assert set(imagine.client.__all__) <= public
    assert imagine.__file__ is not None
    assert (Path(imagine.__file__).parent / "py.typed").exists()

"""The browser pages as HTTP sees them: their policy headers, their files (all served by
this server, with the right types), and scripts that only ever write text."""

from __future__ import annotations

import re
from pathlib import Path

from imagine.web import pages
from tests.support.api import http
from tests.support.server import ServerProcess

STATIC = Path(pages.__file__).parent / "static"
HTML_SINKS = re.compile(
    r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\("
    r"|setTimeout\(\s*['\"`]|createContextualFragment|DOMParser"
)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def test_both_pages_carry_a_strict_policy(server: ServerProcess) -> None:
    for path in ("/", "/console"):
        answer = http.get(f"{server.url}{path}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        policy = dict(
            part.strip().split(" ", 1)
            for part in answer.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["base-uri"] == "'none'"
        assert policy["form-action"] == "'self'"
        assert policy["require-trusted-types-for"] == "'script'"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        # Nothing from elsewhere, and no script in the page itself.
        assert re.findall(r'(?:src|href)="(?![/#])', answer.text) == []
        assert re.search(r"<script(?![^>]*\bsrc=)", answer.text) is None
        assert INLINE_HANDLER.search(answer.text) is None
        assert "style=" not in answer.text
        again = http.get(f"{server.url}{path}", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304


def test_the_assets_are_served_here_and_nothing_else(server: ServerProcess) -> None:
    for name, kind in pages.ASSETS.items():
        answer = http.get(f"{server.url}/assets/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == kind
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.content == (STATIC / name).read_bytes()
    for path in ("/assets/playground.html", "/assets/..%2fpages.py", "/assets/nope.js"):
        answer = http.get(f"{server.url}{path}")
        assert answer.status_code == 404, path
        assert answer.json()["code"] == 404
    # Every file the pages refer to is one of them.
    for page in ("playground.html", "console.html"):
        for name in re.findall(r'(?:src|href)="/assets/([^"]+)"', (STATIC / page).read_text()):
            assert name in pages.ASSETS, (page, name)
    for script in STATIC.glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert name in pages.ASSETS, (script.name, name)


def test_the_scripts_write_no_html() -> None:
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        assert HTML_SINKS.search(text) is None, script.name
        assert "http://" not in text.replace('"http:"', "")
        assert "https://" not in text.replace('"https:"', "")


def test_the_pages_are_not_in_the_api_document(server: ServerProcess) -> None:
    paths = http.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/" not in paths
    assert "/console" not in paths
    assert not any(path.startswith("/assets") for path in paths)

"""Server-side request forgery: no form of a private, loopback or reserved address gets
the server to connect, neither as a source image (`input.image_urls` of
grok-imagine/image-to-video) nor as a `callback_url`.

Real loopback listeners (127.0.0.1 and [::1], one port) count every connection; each
form is aimed at that port. A form the server can judge without a lookup is refused at
submit (400, the message naming the field); a name that must be resolved to be judged may
be accepted, and then the task fails at once, refunded, saying the address was refused
(or, for a callback, the delivery fails for good). Either way, nothing connects.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from imagine.fetch import Fetcher
from imagine.providers.base import ProviderError
from imagine.storage import LocalStorage
from tests.security.common import assert_error_envelope, deliveries, eventually
from tests.support.api import balance, generate, new_key, text_to_image, wait_done
from tests.support.images import image_server
from tests.support.listener import Listener
from tests.support.server import ServerProcess

I2V = "grok-imagine/image-to-video"

LITERAL = "literal"
"""An address in some spelling: refused at submit, 400, naming the field."""
NAME = "name"
"""A host name: refused at submit, or accepted and then refused when resolved."""
ODD = "odd"
"""A URL parsers may read differently: refused at submit (400 or 422), or accepted and
then failed; never a connection."""


def teredo(client: str, server: str = "65.54.227.120") -> str:
    """A Teredo address (2001:0::/32): the server's IPv4, flags, an obfuscated port, and
    the client's IPv4 XOR 0xffffffff in the last 32 bits (RFC 4380)."""
    value = (
        (0x20010000 << 96)
        | (int(ipaddress.IPv4Address(server)) << 64)
        | (0x8000 << 48)
        | (0x63BF << 32)
        | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)
    )
    return str(ipaddress.IPv6Address(value))


HOSTNAME = socket.gethostname().lower()


@dataclass(frozen=True)
class Form:
    name: str
    url: str
    """With `{port}` for the listeners' port."""
    kind: str


FORMS = [
    # IPv4 loopback in every spelling inet_aton and the resolver accept.
    Form("dotted", "http://127.0.0.1:{port}/x.png", LITERAL),
    Form("decimal", "http://2130706433:{port}/x.png", LITERAL),
    Form("two-parts", "http://127.1:{port}/x.png", LITERAL),
    Form("octal", "http://0177.0.0.1:{port}/x.png", LITERAL),
    Form("hex-two-parts", "http://0x7f.1:{port}/x.png", LITERAL),
    Form("trailing-dot", "http://127.0.0.1.:{port}/x.png", LITERAL),
    Form("hex", "http://0x7f000001:{port}/x.png", LITERAL),
    Form("hex-upper-case", "http://0X7F000001:{port}/x.png", LITERAL),
    Form("octal-whole", "http://017700000001:{port}/x.png", LITERAL),
    Form("zero-padded", "http://127.000.000.001:{port}/x.png", LITERAL),
    Form("loopback-range", "http://127.255.255.254:{port}/x.png", LITERAL),
    Form("https", "https://127.0.0.1:{port}/x.png", LITERAL),
    Form("userinfo", "http://example.com@127.0.0.1:{port}/x.png", LITERAL),
    Form(
        "fullwidth-digits", "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/x.png", LITERAL
    ),
    Form("ideographic-dots", "http://127。0。0。1:{port}/x.png", LITERAL),
    Form("unspecified", "http://0.0.0.0:{port}/x.png", LITERAL),
    Form("zero", "http://0:{port}/x.png", LITERAL),
    # IPv6, and IPv6 carrying an IPv4 address.
    Form("ipv6-loopback", "http://[::1]:{port}/x.png", LITERAL),
    Form("ipv6-unspecified", "http://[::]:{port}/x.png", LITERAL),
    Form("ipv4-mapped", "http://[::ffff:127.0.0.1]:{port}/x.png", LITERAL),
    Form("ipv4-mapped-hex", "http://[::ffff:7f00:1]:{port}/x.png", LITERAL),
    Form("nat64", "http://[64:ff9b::7f00:1]:{port}/x.png", LITERAL),
    Form("6to4", "http://[2002:7f00:1::]:{port}/x.png", LITERAL),
    Form("teredo-loopback", f"http://[{teredo('127.0.0.1')}]:{{port}}/x.png", LITERAL),
    Form("teredo-private", f"http://[{teredo('10.0.0.1')}]:{{port}}/x.png", LITERAL),
    Form("ipv4-compatible", "http://[::127.0.0.1]:{port}/x.png", LITERAL),
    Form("ipv6-link-local", "http://[fe80::1]:{port}/x.png", LITERAL),
    Form("ipv6-unique-local", "http://[fd00::1]:{port}/x.png", LITERAL),
    # The local network and the cloud metadata service.
    Form("link-local", "http://169.254.1.1:{port}/x.png", LITERAL),
    Form("metadata", "http://169.254.169.254/latest/meta-data/", LITERAL),
    Form("metadata-mapped", "http://[::ffff:169.254.169.254]/latest/meta-data/", LITERAL),
    Form("private-10", "http://10.0.0.1:{port}/x.png", LITERAL),
    Form("private-192-168", "http://192.168.0.1:{port}/x.png", LITERAL),
    Form("private-172-16", "http://172.16.0.1:{port}/x.png", LITERAL),
    Form("shared-100-64", "http://100.64.0.1:{port}/x.png", LITERAL),
    # Names that lead to this machine.
    Form("localhost", "http://localhost:{port}/x.png", NAME),
    Form("localhost-upper-case", "http://LOCALHOST:{port}/x.png", NAME),
    Form("localhost-trailing-dot", "http://localhost.:{port}/x.png", NAME),
    Form("localhost-circled", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{port}/x.png", NAME),
    Form("ip6-localhost", "http://ip6-localhost:{port}/x.png", NAME),
    Form("sub-localhost", "http://app.localhost:{port}/x.png", NAME),
    Form("own-hostname", f"http://{HOSTNAME}:{{port}}/x.png", NAME),
    # Spellings URL parsers disagree on.
    Form("backslash", "http://127.0.0.1:{port}\\@example.com/x.png", ODD),
    Form("percent-encoded-host", "http://%31%32%37.0.0.1:{port}/x.png", ODD),
    Form("ipv6-zone-id", "http://[fe80::1%25lo]:{port}/x.png", ODD),
]


def test_the_teredo_forms_carry_the_client_addresses() -> None:
    for client in ("127.0.0.1", "10.0.0.1"):
        teredo_pair = ipaddress.IPv6Address(teredo(client)).teredo
        assert teredo_pair is not None
        assert teredo_pair[1] == ipaddress.IPv4Address(client)


def _resolves_privately(host: str) -> bool | None:
    """True: the name resolves here, to non-public addresses only; False: to a public one;
    None: it does not resolve at all."""
    try:
        found = socket.getaddrinfo(host, 80, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    addresses = {ipaddress.ip_address(str(entry[4][0]).split("%")[0]) for entry in found}
    return not any(address.is_global for address in addresses)


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running
    assert running.connections == 0, f"the server connected to the listener: {running.peers}"


def _url(form: Form, listener: Listener) -> str:
    return form.url.format(port=listener.port)


def _refused_at_submit(answer: Any, field: str, form: Form) -> bool:
    """Whether the answer refused the URL at submit, naming the field; fails the test for
    any other refusal."""
    if answer.status_code == 200:
        return False
    allowed = (400, 422) if form.kind == ODD else (400,)
    assert answer.status_code in allowed, answer.text
    message = assert_error_envelope(answer, answer.status_code)
    assert message.startswith(f"{field}:"), message
    return True


def _skip_unless_judged_by_resolving(form: Form, url: str) -> None:
    if form.kind != NAME:
        return
    host = urlsplit(url).hostname or ""
    resolved = _resolves_privately(host)
    if resolved is None:
        pytest.skip(f"{host!r} was accepted at submit and does not resolve on this machine")
    if resolved is False:
        pytest.skip(f"{host!r} resolves to a public address here; nothing to refuse")


@pytest.mark.parametrize("form", FORMS, ids=[form.name for form in FORMS])
def test_a_source_image_url(
    form: Form, bare_server: ServerProcess, bare_key: str, listener: Listener
) -> None:
    url = _url(form, listener)
    before = listener.connections
    credits_before = balance(bare_server.url, bare_key)
    answer = generate(bare_server.url, bare_key, {"model": I2V, "input": {"image_urls": [url]}})
    if not _refused_at_submit(answer, "input.image_urls[0]", form):
        assert form.kind != LITERAL, f"{url} was accepted at submit: {answer.text}"
        _skip_unless_judged_by_resolving(form, url)
        task_id = answer.json()["data"]["task_id"]
        done = wait_done(bare_server.url, bare_key, task_id, timeout=90)
        assert done["status"] == "FAILED", done
        assert done["consumed_credits"] == 0, done
        if form.kind == NAME:
            assert "refused" in str(done["error_message"]), done
    assert balance(bare_server.url, bare_key) == credits_before
    assert listener.connections == before, f"{url} reached the listener: {listener.peers}"


def _final_delivery(server: ServerProcess, key: str, task_id: str) -> dict[str, Any] | None:
    found = deliveries(server.url, key, task_id)
    if found and found[0]["status"] != "pending":
        return found[0]
    return None


def _attempted(server: ServerProcess, key: str, task_id: str) -> dict[str, Any] | None:
    found = deliveries(server.url, key, task_id)
    if found and found[0]["attempts"]:
        return found[0]
    return None


@pytest.mark.parametrize("form", FORMS, ids=[form.name for form in FORMS])
def test_a_callback_url(
    form: Form, bare_server: ServerProcess, bare_key: str, listener: Listener
) -> None:
    url = _url(form, listener)
    before = listener.connections
    answer = generate(bare_server.url, bare_key, {**text_to_image("ssrf"), "callback_url": url})
    if not _refused_at_submit(answer, "callback_url", form):
        assert form.kind != LITERAL, f"{url} was accepted at submit: {answer.text}"
        _skip_unless_judged_by_resolving(form, url)
        task_id = answer.json()["data"]["task_id"]
        assert wait_done(bare_server.url, bare_key, task_id)["status"] == "SUCCESS"
        if form.kind == NAME:
            delivery = eventually(
                lambda: _final_delivery(bare_server, bare_key, task_id),
                what="a final delivery outcome",
            )
            assert delivery["status"] == "failed", delivery
            (attempt,) = delivery["attempts"]
            assert attempt["status_code"] is None, attempt
            error = str(attempt["error"])
            assert "refused" in error or "private or reserved" in error, attempt
        else:
            eventually(lambda: _attempted(bare_server, bare_key, task_id), what="an attempt")
    assert listener.connections == before, f"{url} reached the listener: {listener.peers}"


# -- redirects ---------------------------------------------------------------------------

REDIRECT_TARGETS = [
    Form("dotted", "http://127.0.0.1:{port}/x.png", LITERAL),
    Form("decimal", "http://2130706433:{port}/x.png", LITERAL),
    Form("hex-two-parts", "http://0x7f.1:{port}/x.png", LITERAL),
    Form("trailing-dot", "http://127.0.0.1.:{port}/x.png", LITERAL),
    Form("ipv6-loopback", "http://[::1]:{port}/x.png", LITERAL),
    Form("ipv4-mapped", "http://[::ffff:127.0.0.1]:{port}/x.png", LITERAL),
    Form("scheme-relative", "//127.0.0.1:{port}/x.png", LITERAL),
    Form("metadata", "http://169.254.169.254/latest/meta-data/", LITERAL),
    Form("own-hostname", f"http://{HOSTNAME}:{{port}}/x.png", NAME),
]


@pytest.mark.parametrize("form", REDIRECT_TARGETS, ids=[form.name for form in REDIRECT_TARGETS])
async def test_a_redirect_inward_is_refused_at_the_next_hop(
    tmp_path: Path, listener: Listener, form: Form
) -> None:
    """A URL the server may fetch (a provider host the operator trusts, here `localhost`)
    redirects to a loopback form: the next hop is checked again and refused. (A public URL
    can't be served offline, so this is the downloader itself, as the server builds it.)"""
    if form.kind == NAME and (HOSTNAME == "localhost" or _resolves_privately(HOSTNAME) is not True):
        pytest.skip(f"the host name {HOSTNAME!r} does not resolve to a private address here")
    before = listener.connections
    with image_server() as images:
        port = images.rsplit(":", 1)[1]
        fetcher = Fetcher(
            LocalStorage(tmp_path, "http://imagine.test"),
            user_agent="test",
            allow_private=False,
            max_source_bytes=1_000_000,
            max_result_bytes=1_000_000,
        )
        fetcher.trust({"localhost"})
        try:
            # The trusted host itself is fetched...
            fetched = await fetcher.result(f"http://localhost:{port}/cat.png")
            assert fetched.data.startswith(b"\x89PNG")
            # ... but where it redirects is judged on its own.
            inward = quote(_url(form, listener), safe="")
            with pytest.raises(ProviderError) as refused:
                await fetcher.result(f"http://localhost:{port}/redirect-to/{inward}")
        finally:
            await fetcher.aclose()
    assert refused.value.retryable is False
    assert "refused" in refused.value.message, refused.value.message
    assert listener.connections == before, listener.peers


class _Redirecting(BaseHTTPRequestHandler):
    """Answers POST /hook/<status> with that redirect status, to `location`."""

    location = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(int(self.path.rsplit("/", 1)[1]))
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_a_webhook_receiver_that_redirects_is_not_followed(
    make_server: Any, listener: Listener
) -> None:
    """Even where private addresses are allowed (so the receiver on loopback is reached),
    a redirect answered by the receiver is recorded, never followed."""
    handler = type(
        "Redirecting", (_Redirecting,), {"location": f"http://127.0.0.1:{listener.port}/stolen"}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        server = make_server({"IMAGINE_ALLOW_PRIVATE_URLS": "true", "IMAGINE_PREVIEW_DELAY": "0"})
        key = new_key(server.url)["key"]
        before = listener.connections
        tasks = {}
        for status in (301, 302, 303, 307, 308):
            hook = f"http://127.0.0.1:{httpd.server_address[1]}/hook/{status}"
            answer = generate(server.url, key, {**text_to_image("redirect"), "callback_url": hook})
            assert answer.status_code == 200, answer.text
            tasks[status] = answer.json()["data"]["task_id"]
        for status, task_id in tasks.items():
            delivery = eventually(partial(_attempted, server, key, task_id), what="an attempt")
            assert delivery["attempts"][0]["status_code"] == status, delivery
            assert delivery["status"] != "delivered", delivery
        assert listener.connections == before, listener.peers
    finally:
        httpd.shutdown()
        httpd.server_close()

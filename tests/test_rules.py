"""Plain domain rules, tested as functions."""

from __future__ import annotations

import ipaddress

import pytest

from imagine import catalog
from imagine.api.envelope import field_path
from imagine.errors import BadRequest, InvalidInput
from imagine.netguard import canonical_host, is_public_address, known_refusal, target, url_problem
from imagine.providers.base import percent
from imagine.schemas import GenerateInput, GenerateRequest
from imagine.services.ratelimit import period_in_words
from imagine.services.tasks.validation import check_inputs, sanitized_request
from imagine.worker import retry_delay


class TestRetryDelay:
    def test_grows_and_is_capped(self) -> None:
        for attempt in range(12):
            delay = retry_delay(attempt, cap=60)
            ceiling = min(60, 2.0**attempt)
            assert ceiling / 2 <= delay <= ceiling

    def test_retry_after_wins_when_longer(self) -> None:
        assert retry_delay(1, retry_after=30) == 30


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/a.png", None),
        ("http://example.com:8080/a", None),
        ("ftp://example.com/a", "must be an http:// or https:// URL"),
        ("https:///nohost", "has no host"),
        ("http://example.com:99999/", "is not a valid URL"),
        ("https://example.com/" + "a" * 2100, "is longer than 2048 characters"),
    ],
)
def test_url_problem(url: str, problem: str | None) -> None:
    assert url_problem(url) == problem


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1/x", True),
        ("http://[::1]/x", True),
        ("http://169.254.169.254/latest", True),
        ("http://10.0.0.1/", True),
        ("http://192.168.1.1/", True),
        ("http://[::ffff:127.0.0.1]/", True),
        ("http://224.0.0.1/", True),
        # Every form the system resolver reads as 127.0.0.1:
        ("http://2130706433/", True),
        ("http://127.1/", True),
        ("http://0177.0.0.1/", True),
        ("http://0x7f.1/", True),
        ("http://127.0.0.1./", True),
        ("http://0x7f000001/", True),
        ("http://017700000001/", True),
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", True),  # full-width digits
        ("http://0/", True),
        ("http://localhost/", True),
        ("http://LOCALHOST./", True),
        ("http://app.localhost/", True),
        ("http://[fec0::1]/", True),  # site-local, though some Pythons call it global
        ("http://[64:ff9b:1::a00:1]/", True),  # local-use NAT64 of 10.0.0.1
        ("http://93.184.216.34/", False),
        ("http://1572395042/", False),  # 93.184.216.34 as one number
        ("http://example.com/", False),  # a name: only resolving it can tell
    ],
)
def test_known_refusal(url: str, refused: bool) -> None:
    assert (known_refusal(url, allow_private=False) is not None) is refused
    assert known_refusal(url, allow_private=True) is None


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0x7f.0x0.0.01", "127.0.0.1"),
        ("0x", "0.0.0.0"),
        ("Example.COM.", "example.com"),
        ("b\u00fccher.de", "xn--bcher-kva.de"),
        # As this Python writes it (RFC 5952's `::ffff:127.0.0.1` from 3.13, `::ffff:7f00:1`
        # before), which is how the HTTP client, on the same Python, reads it too.
        ("::ffff:7f00:1", str(ipaddress.IPv6Address("::ffff:127.0.0.1"))),
        ("::FFFF:127.0.0.1", str(ipaddress.IPv6Address("::ffff:127.0.0.1"))),
        ("::1", "::1"),
    ],
)
def test_hosts_are_read_as_the_resolver_reads_them(host: str, canonical: str) -> None:
    assert canonical_host(host)[0] == canonical


@pytest.mark.parametrize(
    "url",
    [
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://08.0.0.1/",
        "http://4294967296/",
        "http://1.2.3.0x100/",
        "http://a..b/",
        "http://[fe80::1%25eth0]/",
        "http://127.0.0.1%2e/",
        "http://-a.example/",
        "http://example.123/",  # a numeric last label makes it an address, and it is none
        "http://0xg.1/",
    ],
)
def test_hosts_that_are_neither_names_nor_addresses(url: str) -> None:
    assert url_problem(url) == "has a host that is neither a valid name nor a valid address"


def test_urls_the_http_client_would_read_otherwise_are_invalid() -> None:
    assert url_problem("http://[::1]@evil.example/") == "is not a valid URL"


def test_the_client_is_given_the_checked_host() -> None:
    assert target("http://u:p@0x5d.0xb8.0xd8.0x22:8080/a.png?x=1").url == (
        "http://u:p@93.184.216.34:8080/a.png?x=1"
    )


def test_public_address() -> None:
    address = target("http://8.8.8.8/").address
    assert address is not None
    assert is_public_address(address)


def test_field_path() -> None:
    assert field_path(("input", "image_urls", 0)) == "input.image_urls[0]"
    assert field_path(()) == "body"


class TestCheckInputs:
    def check(self, model: str, **given: object) -> None:
        spec = catalog.get_model(model)
        assert spec is not None
        check_inputs(spec, GenerateInput.model_validate(given), allow_private=False)

    def test_every_model_accepts_its_inputs(self) -> None:
        self.check(catalog.TEXT_TO_IMAGE, prompt="x")
        self.check(catalog.TEXT_TO_VIDEO, prompt="x")
        self.check(catalog.IMAGE_TO_VIDEO, image_urls=["https://a.com/x.png"])
        self.check(catalog.IMAGE_TO_VIDEO, task_id="t1", prompt="move")
        self.check(catalog.UPSCALE, task_id="t1")

    def test_our_own_urls_are_not_refused(self) -> None:
        spec = catalog.get_model(catalog.IMAGE_TO_VIDEO)
        assert spec is not None
        given = GenerateInput(image_urls=["http://127.0.0.1:8000/files/t1/0.png"])
        with pytest.raises(BadRequest):
            check_inputs(spec, given, allow_private=False)
        check_inputs(spec, given, allow_private=False, is_own_url=lambda _: True)

    def test_upscale_refuses_urls(self) -> None:
        with pytest.raises(InvalidInput, match=r"takes input\.task_id only"):
            self.check(catalog.UPSCALE, task_id="t1", image_urls=["https://a.com/x.png"])


def test_sanitized_request_drops_credentials() -> None:
    request = GenerateRequest.model_validate(
        {"input": {"prompt": "p"}, "callback_url": "https://u:p@h.io/cb?sig=1"}
    )
    assert sanitized_request(request) == {
        "model": catalog.TEXT_TO_IMAGE,
        "input": {"prompt": "p"},
        "callback_url": "https://h.io/cb",
    }


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        (40, 40),
        ("40", 40),
        ("40%", 40),
        (" 7 % ", 7),
        ("0.40", 40),
        (0.4, 40),
        ("1.00", 100),
        (100, 100),
        (140, 100),
        (55.5, 55),
        (0, 0),
        (-3, None),
        ("soon", None),
        ("nan", None),
        (None, None),
        (True, None),
        ("", None),
    ],
)
def test_a_providers_progress_is_read_as_a_whole_percent(
    reported: object, shown: int | None
) -> None:
    assert percent(reported) == shown


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(1, "second"), (60, "minute"), (3600, "hour"), (86400, "day"), (10, "10 seconds"),
     (120, "2 minutes"), (90, "90 seconds"), (7200, "2 hours")],
)  # fmt: skip
def test_a_rate_limits_period_is_said_as_people_say_it(seconds: int, said: str) -> None:
    assert period_in_words(seconds) == said

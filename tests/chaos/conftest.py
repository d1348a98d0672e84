"""The chaos suite: crashes, upstream faults and races, run with `pytest -m chaos`.

Each test records its figures (what it injected and what came of it); they are printed as
one `CHAOS-FIGURES {json}` line per test at the end of the run, and appended to the file
named by IMAGINE_CHAOS_FIGURES when that is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

_collected: list[str] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest, record_property: Any) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; recorded even when the test fails."""
    found: dict[str, Any] = {"test": request.node.nodeid}
    yield found
    line = json.dumps(found, sort_keys=True, default=str)
    print(f"CHAOS-FIGURES {line}")
    record_property("chaos_figures", line)
    path = os.environ.get("IMAGINE_CHAOS_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"CHAOS-FIGURES {line}\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _collected.extend(
            str(value) for name, value in report.user_properties if name == "chaos_figures"
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _collected:
        terminalreporter.section("chaos figures")
        for line in _collected:
            terminalreporter.write_line(f"CHAOS-FIGURES {line}")

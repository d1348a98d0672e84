"""docs/sdk.md is what scripts/sdk_docs.py makes of the docstrings now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sdk_docs.py"


def test_the_sdk_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("sdk_docs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = script.TARGET.read_text(encoding="utf-8")
    assert committed == script.render(), "docs/sdk.md is stale: run scripts/sdk_docs.py"
    assert script.main(["--check"]) == 0

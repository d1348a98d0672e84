"""Without the `gpu` extra (an API node): imagine imports, routes to `local` and answers
for it, and never imports torch; a process that can't run the models leaves its tasks
to the workers that can."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.abc, json, sys

    class NoExtra(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "diffusers", "transformers"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoExtra())
    for name in ("torch", "diffusers", "transformers"):
        sys.modules[name] = None  # find_spec answers None for these

    import imagine.cli  # noqa
    from imagine.api.app import create_app  # noqa
    from imagine.config import load_settings
    from imagine.providers.base import Job, ProviderContext, ProviderError
    from imagine.providers.registry import build_router

    async def source(url, account):
        return b""

    context = ProviderContext(load_settings(), source, lambda u: True, lambda *a: "", "t")
    router = build_router(load_settings(), context)
    local = router.get("local")
    job = Job("t1", "grok-imagine/text-to-image", "acc", {"prompt": "x"})

    async def main():
        health = await local.check()
        try:
            await local.submit(job)
            deferred = None
        except ProviderError as exc:
            deferred = [exc.deferred, exc.message]
        return health, deferred

    health, deferred = asyncio.run(main())
    print(json.dumps({
        "routes": {m: list(router.routes(m)) for m in sorted(local.models)},
        "unrouted": list(router.routes("grok-imagine/upscale")),
        "health": [health.ok, health.detail],
        "deferred": deferred,
        "torch": [m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers")
                  and sys.modules[m] is not None],
    }))
    """
)


def test_no_torch_is_imported_where_the_extra_is_missing(
    models: dict[str, Path], tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env = {
        **clean,
        "IMAGINE_ENV_FILE": os.devnull,
        "IMAGINE_DATA_DIR": str(tmp_path),
        "IMAGINE_PROVIDER": "local",
        "IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL": str(models["sdxl"]),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["routes"] == {"grok-imagine/text-to-image": ["local"]}
    assert found["unrouted"] == []
    assert found["health"] == [
        False,
        "torch, diffusers, transformers not installed here (imagine's gpu extra)",
    ]
    assert found["deferred"][0] is True
    assert "waiting for one that can" in found["deferred"][1]
    assert found["torch"] == []

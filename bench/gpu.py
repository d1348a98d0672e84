"""Throughput of the local provider: images per second and seconds per video at batch
sizes 1, 4 and 8, and how much of that time the GPU spent inside the pipeline.

    .venv-gpu/bin/python -m bench.gpu --tiny            # CPU smoke run on tiny random models
    IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL=/models/sdxl-turbo \\
    IMAGINE_LOCAL_TEXT_TO_VIDEO_MODEL=/models/ltx-video \\
    IMAGINE_LOCAL_TEXT_TO_IMAGE_ARGS='{"num_inference_steps": 1, "guidance_scale": 0}' \\
        python -m bench.gpu --images 32 --videos 8      # a GPU host with real weights

Each batch size gets its own `imagine serve` (API and worker in one process, as a
single-GPU host runs it) with the local provider on every configured model and
IMAGINE_LOCAL_BATCH_SIZE set; the other IMAGINE_LOCAL_* settings are taken from the
environment as they are. One image and one video task first load the models (their time
is not counted). Then all image tasks are created at once through POST /api/generate and
waited for, then the video tasks likewise. Per kind it reports:

- images per second (tasks / wall time from the first create to the last SUCCESS), or
  seconds per video (wall time / tasks);
- pipeline share: the wall time the GPU thread spent inside pipeline calls (the
  `imagine_local_seconds{stage="pipeline"}` histogram of the server's /metrics) over the
  whole run's wall time. The rest is our own code around it: the HTTP API, the database,
  the worker's steps, sizing the inputs, waiting for a batch to fill, PNG/MP4 encoding
  (shown apart, as `encode`, though it overlaps the next batch's pipeline call) and
  storing the files.

`--tiny` builds the tiny random pipelines of the tests (tests/gpu/tiny.py) and runs them
on the CPU at tiny sizes: it proves the benchmark runs, its figures mean nothing about
performance. See docs/benchmarks.md and docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tests.support.api import create_task, http, new_key, wait_done
from tests.support.server import ServerProcess

IMAGE = "grok-imagine/text-to-image"
VIDEO = "grok-imagine/text-to-video"
PROMPT = "A majestic dragon flying over a neon-lit cyberpunk city"
TINY = {
    "IMAGINE_LOCAL_DEVICE": "cpu",
    "IMAGINE_LOCAL_IMAGE_SIDE": "64",
    "IMAGINE_LOCAL_VIDEO_SIDES": json.dumps({"480p": 32, "720p": 64}),
    "IMAGINE_LOCAL_FPS": "4",
    "IMAGINE_LOCAL_TEXT_TO_IMAGE_ARGS": json.dumps({"num_inference_steps": 2}),
    "IMAGINE_LOCAL_TEXT_TO_VIDEO_ARGS": json.dumps({"num_inference_steps": 2}),
}


def tiny_models(root: Path) -> dict[str, str]:
    import warnings

    from tests.gpu import tiny

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL": str(tiny.stable_diffusion_xl(root / "sdxl")),
            "IMAGINE_LOCAL_TEXT_TO_VIDEO_MODEL": str(tiny.ltx_video(root / "ltx")),
        }


def stage_seconds(server: ServerProcess, model: str, stage: str) -> float:
    """The server's total of imagine_local_seconds for one model and stage."""
    wanted = ("imagine_local_seconds_sum{", f'model="{model}"', f'stage="{stage}"')
    for line in http.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if all(part in line for part in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_kind(server: ServerProcess, key: str, model: str, count: int) -> dict[str, float]:
    body = {"model": model, "input": {"prompt": PROMPT}}
    pipeline = stage_seconds(server, model, "pipeline")
    encode = stage_seconds(server, model, "encode")
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: create_task(server.url, key, body), range(count)))
    for task_id in ids:
        done = wait_done(server.url, key, task_id, timeout=3600)
        if done["status"] != "SUCCESS":
            raise SystemExit(f"task {task_id} failed: {done.get('error_message')}")
    wall = time.perf_counter() - started
    pipeline = stage_seconds(server, model, "pipeline") - pipeline
    encode = stage_seconds(server, model, "encode") - encode
    return {
        "tasks": count,
        "wall_seconds": wall,
        "pipeline_seconds": pipeline,
        "encode_seconds": encode,
        "pipeline_share": pipeline / wall if wall else 0.0,
        "encode_share": encode / wall if wall else 0.0,
    }


def one_batch_size(
    batch: int, env: dict[str, str], args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    settings = {
        **env,
        "IMAGINE_PROVIDER": "local",
        "IMAGINE_LOCAL_BATCH_SIZE": str(batch),
        "IMAGINE_LOCAL_MAX_QUEUED": str(max(16, 2 * batch)),
        "IMAGINE_TASK_DEADLINE": "86400",
        "IMAGINE_LOG_LEVEL": "warning",
    }
    found: dict[str, Any] = {"batch_size": batch}
    with ServerProcess(root / f"batch-{batch}", settings) as server:
        key = new_key(server.url, credits=10**9)["key"]
        kinds = [(IMAGE, args.images), (VIDEO, args.videos)]
        kinds = [(model, n) for model, n in kinds if n and _configured(settings, model)]
        for model, _ in kinds:  # load every model before anything is timed
            run_kind(server, key, model, 1)
        for model, count in kinds:
            found[model] = run_kind(server, key, model, count)
    return found


def _configured(env: dict[str, str], model: str) -> bool:
    kind = model.removeprefix("grok-imagine/").replace("-", "_").upper()
    return bool(env.get(f"IMAGINE_LOCAL_{kind}_MODEL"))


def report(results: list[dict[str, Any]], tiny: bool, console: Console) -> None:
    title = "local provider" + (
        " (CPU smoke run, tiny random models: not a performance figure)" if tiny else ""
    )
    table = Table(title=title)
    for column in ("batch", "kind", "tasks", "throughput", "pipeline share", "encode"):
        table.add_column(column, justify="right")
    for run in results:
        for model in (IMAGE, VIDEO):
            figures = run.get(model)
            if figures is None:
                continue
            if model == IMAGE:
                rate = f"{figures['tasks'] / figures['wall_seconds']:.2f} images/s"
            else:
                rate = f"{figures['wall_seconds'] / figures['tasks']:.2f} s/video"
            table.add_row(
                str(run["batch_size"]),
                model.removeprefix("grok-imagine/"),
                str(figures["tasks"]),
                rate,
                f"{figures['pipeline_share']:.0%}",
                f"{figures['encode_share']:.0%}",
            )
    console.print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated (1,4,8)")
    parser.add_argument("--images", type=int, default=32, help="image tasks per batch size")
    parser.add_argument("--videos", type=int, default=8, help="video tasks per batch size")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    sizes = [int(part) for part in args.batch_sizes.split(",") if part.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder:
        root = Path(folder)
        env = {key: value for key, value in os.environ.items() if key.startswith("IMAGINE_")}
        if args.tiny:
            env = {**env, **TINY, **tiny_models(root / "models")}
        elif not (_configured(env, IMAGE) or _configured(env, VIDEO)):
            console.print(
                "set IMAGINE_LOCAL_TEXT_TO_IMAGE_MODEL and/or IMAGINE_LOCAL_TEXT_TO_VIDEO_MODEL "
                "(or use --tiny)"
            )
            return 2
        results = []
        for batch in sizes:
            console.print(f"batch size {batch} ...")
            results.append(one_batch_size(batch, env, args, root))
    report(results, args.tiny, console)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = {"python": platform.python_version(), "machine": platform.machine()}
        document = {"tiny": args.tiny, "machine": machine, "runs": results}
        args.out.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

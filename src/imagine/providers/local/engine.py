"""The torch side: pick the device, load each model folder once, run one pipeline call
for a batch of compatible tasks. Everything here runs in the provider's GPU thread, and
this is the only module that imports torch and diffusers (when it is first used, never
at import), so API processes and processes without the `gpu` extra never load them.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram

from imagine import catalog
from imagine.providers.local.settings import LocalSettings
from imagine.providers.local.shapes import Family

logger = logging.getLogger("imagine.providers.local")

SECONDS = Histogram(
    "imagine_local_seconds",
    "Seconds the local provider spent, by model and stage: load (a model folder), "
    "pipeline (one batched call), encode (one PNG or MP4).",
    ["model", "stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
BATCHES = Counter(
    "imagine_local_batch_items_total",
    "Tasks the local provider ran, by model and the size of the call they were in.",
    ["model", "batch_size"],
)

REQUIRED = ("torch", "diffusers", "transformers")


def missing_packages() -> list[str]:
    """The packages of the `gpu` extra this process lacks (looked up, not imported)."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


class LoadError(Exception):
    """A model folder that could not be loaded; the message is for the operator's log."""


@dataclass(frozen=True, slots=True)
class Work:
    """One task, ready for the pipeline."""

    task_id: str
    model: str
    family: Family
    prompt: str
    seed: int
    width: int
    height: int
    frames: int = 0
    fps: int = 0
    image: Any = None
    """The source image (PIL, already at width x height) of image-to-video and upscale."""
    target: tuple[int, int] | None = None
    """The size the result is resampled to (upscale: twice the source)."""

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        """Tasks with the same key go in one call."""
        return (self.model, self.width, self.height, self.frames, self.fps)

    def describe(self) -> str:
        size = f"{self.width}x{self.height}"
        return f"{size}, {self.frames} frames" if self.frames else size


@dataclass(frozen=True, slots=True)
class Pictures:
    """What the pipeline made for one task: one image, or a video's frames (PIL)."""

    frames: list[Any]
    fps: int = 0


@dataclass(frozen=True, slots=True)
class Broken:
    """One task the pipeline could not make; `message` is for the user."""

    message: str


@dataclass(frozen=True, slots=True)
class Unloadable:
    """The model could not be loaded: the operator's problem, not the task's."""

    message: str


Made = Pictures | Broken | Unloadable


@dataclass
class _Resident:
    pipe: Any
    seconds: float


@dataclass
class Engine:
    settings: LocalSettings
    dirs: dict[str, Path]
    _device: Any = None
    _dtype: Any = None
    _resident: dict[str, _Resident] = field(default_factory=dict)
    _failed: dict[str, tuple[float, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    LOAD_RETRY = 60.0
    """Seconds a failed load is remembered before the folder is tried again."""

    # -- device and models -------------------------------------------------------------

    def device(self) -> Any:
        if self._device is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("DISABLE_TELEMETRY", "1")
            import torch

            wanted = self.settings.device
            if wanted == "auto":
                wanted = "cuda" if torch.cuda.is_available() else "cpu"
            device = torch.device(wanted)
            if device.type == "cuda":
                # Pinned: whatever allocates on "cuda" without an index lands here too.
                torch.cuda.set_device(device)
            self._device = device
            self._dtype = _dtype(torch, self.settings.dtype, device)
            logger.info(
                "local provider on %s (%s)", device, str(self._dtype).removeprefix("torch.")
            )
        return self._device

    def resident(self) -> list[str]:
        return sorted(self._resident)

    def pipeline(self, model: str, family: Family) -> Any:
        """The model's pipeline, loaded on the first call and kept. Raises LoadError."""
        with self._lock:
            found = self._resident.get(model)
            if found is not None:
                return found.pipe
            failed = self._failed.get(model)
            if failed is not None and time.monotonic() - failed[0] < self.LOAD_RETRY:
                raise LoadError(failed[1])
            started = time.perf_counter()
            try:
                pipe = self._load(model, family)
            except Exception as exc:
                message = f"loading {self.dirs[model]} failed: {type(exc).__name__}: {exc}"
                self._failed[model] = (time.monotonic(), message)
                raise LoadError(message) from exc
            seconds = time.perf_counter() - started
            SECONDS.labels(model, "load").observe(seconds)
            logger.info("loaded %s for %s in %.1f s", self.dirs[model], model, seconds)
            self._resident[model] = _Resident(pipe, seconds)
            self._failed.pop(model, None)
            return pipe

    def _load(self, model: str, family: Family) -> Any:
        device = self.device()
        diffusers = _diffusers()

        if model == catalog.TEXT_TO_IMAGE:
            loader: Any = diffusers.AutoPipelineForText2Image
        else:
            loader = getattr(diffusers, family.pipeline)
        options: dict[str, Any] = {"local_files_only": True, "torch_dtype": self._dtype}
        if self.settings.variant:
            options["variant"] = self.settings.variant
        pipe = loader.from_pretrained(str(self.dirs[model]), **options)
        if self.settings.cpu_offload and device.type != "cpu":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- one call ----------------------------------------------------------------------

    def run(self, batch: Sequence[Work]) -> list[Made]:
        """Make every task of `batch` (all of one key) in one pipeline call. A call that
        fails (out of memory above all) is tried again one task at a time, so that only
        the task at fault fails; a task that fails alone gets its message."""
        first = batch[0]
        try:
            pipe = self.pipeline(first.model, first.family)
        except LoadError as exc:
            logger.error("local provider: %s", exc)
            return [Unloadable(str(exc))] * len(batch)
        try:
            made = self._call(pipe, batch)
        except Exception as exc:
            oom = is_out_of_memory(exc)
            if oom:
                self._free()
            if len(batch) > 1:
                logger.warning(
                    "a batch of %d %s tasks failed (%s); running them one at a time",
                    len(batch),
                    first.model,
                    "out of memory" if oom else type(exc).__name__,
                )
                return [self.run([work])[0] for work in batch]
            if oom:
                return [
                    Broken(
                        f"the GPU ran out of memory making this ({first.describe()}); "
                        "try a lower resolution or a shorter video"
                    )
                ]
            logger.exception("task %s: the local %s model failed", first.task_id, first.model)
            return [Broken(f"the local model failed: {type(exc).__name__}: {str(exc)[:300]}")]
        BATCHES.labels(first.model, str(len(batch))).inc(len(batch))
        return list(made)

    def _call(self, pipe: Any, batch: Sequence[Work]) -> list[Pictures]:
        import torch

        first = batch[0]
        family = first.family
        # One generator per task, on the CPU: each task's noise depends on its own seed
        # only, whatever else is in its batch and whichever GPU runs it.
        arguments: dict[str, Any] = {
            "generator": [torch.Generator("cpu").manual_seed(work.seed) for work in batch],
            "output_type": "pil",
        }
        if family.prompt:
            arguments["prompt"] = [work.prompt for work in batch]
        if first.image is not None:
            arguments["image"] = [work.image for work in batch]
        if first.model != catalog.UPSCALE:
            arguments["width"], arguments["height"] = first.width, first.height
        if first.frames:
            arguments["num_frames"] = first.frames
            if family.fps_argument:
                arguments[family.fps_argument] = first.fps
        arguments.update(dict(family.extra))
        arguments.update(self.settings.args_for(first.model))
        started = time.perf_counter()
        with torch.inference_mode():
            output = pipe(**arguments)
        SECONDS.labels(first.model, "pipeline").observe(time.perf_counter() - started)
        if first.frames:
            videos = list(output.frames)
            return [Pictures(list(frames), first.fps) for frames in videos]
        return [Pictures([image]) for image in output.images]

    def _free(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        self._resident.clear()
        if self._device is not None:
            self._free()


def _diffusers() -> Any:
    """diffusers, its pipelines imported: their modules warn of their own deprecations
    (torch.jit.script and the like), which are no business of this server's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import diffusers

        diffusers.AutoPipelineForText2Image  # noqa: B018 (imports every pipeline module)
    return diffusers


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _dtype(torch: Any, name: str, device: Any) -> Any:
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type in ("mps", "xpu"):
        return torch.float16
    return torch.float32

"""A generate request's inputs, per model: each refusal names the field and says what to
send instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagine import catalog
from imagine.catalog import ModelSpec
from imagine.errors import BadRequest, InvalidInput
from imagine.netguard import known_refusal, url_problem, url_without_secrets
from imagine.schemas import GenerateInput, GenerateRequest

OPTION_NAMES = ("aspect_ratio", "mode", "duration", "resolution", "index")


def model_of(request: GenerateRequest) -> ModelSpec:
    spec = catalog.get_model(request.model)
    if spec is None:
        raise InvalidInput(
            f"model: unknown model {request.model!r}; use one of " + ", ".join(catalog.MODELS)
        )
    return spec


def check_callback_url(url: str | None, *, allow_private: bool) -> None:
    if url is None:
        return
    problem = url_problem(url)
    if problem is not None:
        raise InvalidInput(f"callback_url: {problem}")
    refusal = known_refusal(url, allow_private=allow_private)
    if refusal is not None:
        raise BadRequest(f"callback_url: {refusal}, which this server does not call")


def check_inputs(
    spec: ModelSpec,
    given: GenerateInput,
    *,
    allow_private: bool,
    is_own_url: Callable[[str], bool] = lambda _: False,
) -> None:
    """Each model's required inputs; raises InvalidInput naming the field."""
    if spec.needs_prompt and not (given.prompt and given.prompt.strip()):
        raise InvalidInput(f"input.prompt: required for {spec.name}")
    if spec.needs_image:
        if given.image_urls and given.task_id:
            raise InvalidInput("input: give input.image_urls or input.task_id, not both")
        if not given.image_urls and not given.task_id:
            raise InvalidInput(
                f"input.image_urls: required for {spec.name} "
                "(or give input.task_id of an earlier image task)"
            )
    if spec.needs_task:
        if not given.task_id:
            raise InvalidInput(
                f"input.task_id: required for {spec.name}: the id of a finished image task"
            )
        if given.image_urls:
            raise InvalidInput(f"input.image_urls: {spec.name} takes input.task_id only")
    if not (spec.needs_image or spec.needs_task):
        if given.image_urls:
            raise InvalidInput(f"input.image_urls: not used by {spec.name}")
        if given.task_id:
            raise InvalidInput(f"input.task_id: not used by {spec.name}")
    if given.image_urls is not None and not given.image_urls and spec.needs_image:
        raise InvalidInput("input.image_urls: give one image URL")
    _check_options(spec, given)
    for index, url in enumerate(given.image_urls or []):
        problem = url_problem(url)
        if problem is not None:
            raise InvalidInput(f"input.image_urls[{index}]: {problem}")
        # Our own result URLs are read from storage, never fetched.
        refusal = None if is_own_url(url) else known_refusal(url, allow_private=allow_private)
        if refusal is not None:
            raise BadRequest(
                f"input.image_urls[{index}]: {refusal}, which this server does not fetch"
            )


def _check_options(spec: ModelSpec, given: GenerateInput) -> None:
    """The optional inputs: each only where the model takes it, with a documented value."""
    for name in OPTION_NAMES:
        value = getattr(given, name)
        if value is None:
            continue
        allowed = spec.options.get(name)
        if allowed is None:
            raise InvalidInput(f"input.{name}: not used by {spec.name}")
        if str(value) not in allowed:
            raise InvalidInput(f"input.{name}: must be one of " + ", ".join(allowed))
    if given.index is not None and not given.task_id:
        raise InvalidInput(
            "input.index: only with input.task_id (it picks one of that task's images)"
        )
    if given.mode == "spicy" and given.image_urls:
        raise InvalidInput(
            "input.mode: spicy is not available with input.image_urls; "
            "use input.task_id of an image task, or mode fun or normal"
        )


def sanitized_request(request: GenerateRequest) -> dict[str, Any]:
    """The submitted payload as the status call shows it: no credentials, no query strings."""
    shown: dict[str, Any] = {
        "model": request.model,
        "input": request.input.model_dump(exclude_none=True),
    }
    if request.callback_url is not None:
        shown["callback_url"] = url_without_secrets(request.callback_url)
    if request.public:
        shown["public"] = True
    return shown

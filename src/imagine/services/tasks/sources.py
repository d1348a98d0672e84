"""An earlier task as the input of a new one (upscale, image-to-video by task id)."""

from __future__ import annotations

from imagine import catalog
from imagine.catalog import ModelSpec, Output
from imagine.errors import InvalidInput
from imagine.providers.base import SourceTask
from imagine.states import TaskStatus
from imagine.store.tasks import TaskRow


def source_task(row: TaskRow) -> SourceTask:
    """An earlier task as a provider sees it when a new one chains on it."""
    return SourceTask(
        task_id=row.id,
        model=row.model,
        provider=row.provider,
        upstream_id=row.upstream_id,
        result_urls=list(row.result_urls or []),
        result_sizes=list(row.result_sizes or []),
    )


def usable_source(spec: ModelSpec, source_id: str, row: TaskRow | None) -> SourceTask:
    """The task `input.task_id` names, if a task of `spec` can chain on it; raises
    InvalidInput saying why not (`row` is None when the account has no such task)."""
    if row is None:
        raise InvalidInput(f"input.task_id: no task {source_id} in this account")
    source_spec = catalog.get_model(row.model)
    if source_spec is None or source_spec.output is not Output.IMAGE:
        raise InvalidInput(
            f"input.task_id: task {source_id} made a video; {spec.name} needs an image task"
        )
    if row.status is not TaskStatus.SUCCESS:
        raise InvalidInput(
            f"input.task_id: task {source_id} is {row.status}; "
            f"{spec.name} needs a task that finished with SUCCESS"
        )
    return source_task(row)

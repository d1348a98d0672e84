"""The `data` of the answers about tasks, built to the shapes of `imagine.schemas`."""

from __future__ import annotations

from imagine.clock import iso_z
from imagine.schemas import StatusData
from imagine.states import TaskStatus
from imagine.store.tasks import TaskView


def status_data(task: TaskView) -> StatusData:
    """The `data` of a status answer, exactly the API document's fields (plus completed_at)."""
    data: StatusData = {
        "task_id": task.id,
        "status": task.status,
        "request": task.request,
        "response": (
            {"resultUrls": task.result_urls or []} if task.status is TaskStatus.SUCCESS else None
        ),
        "consumed_credits": 0 if task.refunded else task.credits,
        "error_message": task.error_message if task.status is TaskStatus.FAILED else None,
        "created_at": iso_z(task.created_at),
        "completed_at": iso_z(task.finished_at) if task.finished_at else None,
    }
    # An addition for unfinished tasks only: every other answer keeps its shape.
    if task.status is TaskStatus.IN_PROGRESS and task.progress is not None:
        data["progress"] = task.progress
    return data

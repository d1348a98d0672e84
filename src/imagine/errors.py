"""Domain errors. Each carries the HTTP status the API answers with; nothing else does."""

from __future__ import annotations


class ImagineError(Exception):
    """Base of every expected failure; `message` is written for the API's user."""

    status_code = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class BadRequest(ImagineError):
    status_code = 400


class InvalidInput(ImagineError):
    """A field holds a value the API can't accept; the message names the field."""

    status_code = 422


class Unauthorized(ImagineError):
    status_code = 401


class InsufficientCredits(ImagineError):
    status_code = 402


class NotFound(ImagineError):
    status_code = 404


class Conflict(ImagineError):
    status_code = 409


class PayloadTooLarge(ImagineError):
    status_code = 413


class ServiceUnavailable(ImagineError):
    """A transient condition (a busy database); the client should retry with backoff."""

    status_code = 503


class TooManyRequests(ImagineError):
    status_code = 429


# -- named for their condition: what callers catch and tests expect -----------------------


class TaskNotFound(NotFound):
    """No such task in the caller's account (another account's task answers the same)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class TaskAlreadyEnded(Conflict):
    """The task is SUCCESS or FAILED: nothing can change it any more."""

    def __init__(self, task_id: str, status: str | None = None) -> None:
        ended = f"already ended with {status}" if status else "ended meanwhile"
        super().__init__(f"task {task_id} {ended}; nothing to cancel")
        self.task_id = task_id


class AccountNotFound(NotFound):
    def __init__(self, account_id: str, hint: str = "") -> None:
        super().__init__(f"account {account_id} not found{hint}")
        self.account_id = account_id


class DeliveryNotFound(NotFound):
    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"webhook delivery {delivery_id} not found")
        self.delivery_id = delivery_id


class DeliveryAlreadyDelivered(Conflict):
    """The receiver accepted it: there is nothing left to retry."""

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"webhook delivery {delivery_id} was delivered; nothing to retry")
        self.delivery_id = delivery_id


class InvalidKey(Unauthorized):
    """The bearer key is unknown or was revoked."""

    def __init__(self) -> None:
        super().__init__("invalid API key: it is unknown or was revoked")

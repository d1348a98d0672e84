"""Log lines of `serve` and `worker`: one handler on stderr, text or JSON, secrets masked.

The stdlib's `logging.config.dictConfig` is enough: uvicorn takes the same dictionary
(`log_config`), so its access and error lines come out in the same format, and no
library is needed for a formatter of twenty lines.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from imagine.ids import KEY_PREFIX
from imagine.webhooks import SECRET_PREFIX

LogFormat = Literal["text", "json"]

task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)
"""The task a worker step is advancing; its log lines carry the id without saying it."""

REDACTED = "<redacted>"

# Environment variables whose values are secrets wherever they appear in a line.
_SECRET_NAMES = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$|SECRET")
_SHORTEST_SECRET = 8
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # First, so that a bearer key is masked whole rather than by its prefix.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # Our API keys and webhook signing secrets: shown by prefix only (a key's shown
    # prefix, `im_` and 7 characters, as the access log writes it, is left alone).
    (re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{12,}"), KEY_PREFIX + REDACTED),
    (re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9+/=_-]{6,}"), SECRET_PREFIX + REDACTED),
    # An upstream callback's path ends with its token (`<token>` once the access log
    # has masked it).
    (re.compile(r"(/callbacks/[^/\s?\"']+/[^/\s?\"']+/)[^/\s?\"'#<]+"), r"\1" + REDACTED),
    # AWS access key ids, and key=value / "key": "value" pairs named like secrets.
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (
        re.compile(
            r"(?i)([A-Za-z0-9_-]*(?:secret|api[_-]?key|token|passw(?:or)?d)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',&;]+"
        ),
        r"\1" + REDACTED,
    ),
    # The password of a database URL.
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1" + REDACTED + "@"),
    # xAI API keys.
    (re.compile(r"\bxai-[A-Za-z0-9]{16,}"), REDACTED),
)


def secret_values(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """Values of the environment named like secrets (provider API keys, the admin token,
    AWS secrets), longest first so that one containing another is masked whole."""
    found = {
        value.strip()
        for name, value in environ.items()
        if _SECRET_NAMES.search(name.upper()) and len(value.strip()) >= _SHORTEST_SECRET
    }
    return sorted(found, key=len, reverse=True)


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        self._secrets = secrets

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message and traceback before any formatter sees it.

    On the handler, so every logger that reaches it (uvicorn's too) is covered."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self._redact = Redactor(secret_values() if secrets is None else secrets)
        self._traceback = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def _task_id(record: logging.LogRecord) -> str | None:
    given = getattr(record, "task_id", None)
    return str(given) if given is not None else task_id_var.get()


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-12-02T04:40:36.123Z INFO imagine.worker [tsk_...] task tsk_...: SUCCESS`"""

    def format(self, record: logging.LogRecord) -> str:
        task_id = _task_id(record)
        line = f"{_time(record)} {record.levelname} {record.name}"
        if task_id:
            line += f" [{task_id}]"
        line += f" {record.getMessage()}"
        extra = self._extra(record)
        return f"{line}\n{extra}" if extra else line

    def _extra(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [part for part in (record.exc_text, record.stack_info) if part]
        return "\n".join(parts)


class JsonFormatter(TextFormatter):
    """One JSON object per line: time, level, logger, message, task_id (when known),
    and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = _task_id(record)
        if task_id:
            line["task_id"] = task_id
        extra = self._extra(record)
        if extra:
            line["exception"] = extra
        return orjson.dumps(line).decode()


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The dictConfig of `serve` and `worker`, also handed to uvicorn as its log_config."""
    level = level.upper()
    handler = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                "filters": ["redact"],
            }
        },
        "loggers": {
            "imagine": handler,
            "uvicorn": handler,
            "uvicorn.error": {"level": level},
            "uvicorn.access": {**handler, "level": "INFO"},
        },
        # Libraries' warnings (asyncio, aiohttp...) in the same format, not the bare
        # last-resort output.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }

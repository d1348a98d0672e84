"""Settings, read from `IMAGINE_*` environment variables (and flags where natural)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from limits import RateLimitItem, parse
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from imagine import catalog
from imagine.webhooks import parse_schedule

_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*s?\s*$")


def parse_routes(value: Any) -> dict[str, tuple[str, ...]]:
    """`IMAGINE_ROUTES`: per model, the providers to try in order.

    Either `text-to-video=kie,xai; upscale=kie` (model names with or without the
    `grok-imagine/` prefix) or the same as a JSON object of lists.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg})") from None
        else:
            value = {}
            for entry in filter(None, (part.strip() for part in re.split(r"[;\n]", text))):
                model, equals, names = entry.partition("=")
                if not equals:
                    raise ValueError(f"{entry!r} is not model=provider[,provider...]")
                value[model.strip()] = names.split(",")
    if not isinstance(value, dict):
        raise ValueError("give model=provider[,provider...] entries separated by ;")
    table: dict[str, tuple[str, ...]] = {}
    for model, names in value.items():
        full = model if model in catalog.MODELS else f"grok-imagine/{model}"
        if full not in catalog.MODELS:
            raise ValueError(f"unknown model {model!r}; use one of " + ", ".join(catalog.MODELS))
        listed = [names] if isinstance(names, str) else list(names)
        chosen = tuple(str(name).strip() for name in listed if str(name).strip())
        if not chosen:
            raise ValueError(f"{model}: name at least one provider")
        for name in chosen:
            if not _PROVIDER_NAME.match(name):
                raise ValueError(f"{model}: {name!r} is not a provider name")
        table[full] = chosen
    return table


def parse_s3_url(value: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix); the prefix may be empty."""
    scheme, _, rest = value.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3":
        raise ValueError("use a folder path or s3://bucket/prefix")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{bucket!r} is not a bucket name; use s3://bucket/prefix")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError("the prefix can't have empty, . or .. parts")
    return bucket, prefix


def parse_rate(value: Any) -> tuple[int, float]:
    """`20/10s` (20 calls per 10 seconds), `10/s` or `10/1`; returns (calls, seconds)."""
    if isinstance(value, tuple):
        return value
    match = _RATE.match(str(value))
    if match is None:
        raise ValueError("write the rate as CALLS/SECONDS, for example 20/10s or 10/s")
    calls, seconds = int(match.group(1)), float(match.group(2) or 1)
    if calls < 1 or seconds <= 0:
        raise ValueError("the rate needs at least 1 call per a positive number of seconds")
    return calls, seconds


def parse_limit(value: str | None) -> RateLimitItem | None:
    """A per-key API limit: `120/minute`, `10/second`, `1000/hour`...; empty: none."""
    if value is None or not value.strip():
        return None
    try:
        return parse(value)
    except ValueError:
        raise ValueError("write it as COUNT/PERIOD, for example 120/minute or 5/second") from None


Rate = Annotated[tuple[int, float], NoDecode, BeforeValidator(parse_rate)]


class Settings(BaseSettings):
    """Every knob of the server. Defaults give the embedded setup: SQLite and local files."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", extra="ignore")

    data_dir: Path = Field(
        default=Path("imagine-data"),
        description="Folder for the SQLite database and result files.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite+aiosqlite:///<data_dir>/imagine.db. "
        "PostgreSQL: postgresql+asyncpg://user@host/db.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="PostgreSQL connections one process keeps at most (opened as needed, "
        "kept while in use); every process of a fleet holds its own.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base of result URLs, e.g. https://imagine.example.com. "
        "Default: the address the server listens on.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the /admin API; the admin API is off when unset."
    )
    provider: str = Field(
        default="preview",
        description="Provider serving every model without a route: preview, kie, xai or local.",
    )
    routes: Annotated[dict[str, tuple[str, ...]], NoDecode, BeforeValidator(parse_routes)] = Field(
        default_factory=dict,
        description="Per-model providers in failover order, e.g. "
        "text-to-video=kie,xai;upscale=kie.",
    )
    failover_after: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed tries (429, 5xx, timeouts) on one route before the next is tried.",
    )
    webhook_retry_schedule: Annotated[
        tuple[float, ...], NoDecode, BeforeValidator(parse_schedule)
    ] = Field(
        default=(5, 300, 1800, 7200, 18000, 36000, 36000),
        description="Waits before each webhook retry, e.g. 5s,5m,30m,2h,5h,10h,10h.",
    )
    webhook_timeout: float = Field(
        default=10, gt=0, le=120, description="Seconds a webhook receiver has to answer."
    )
    rate_limit_generate: str | None = Field(
        default=None, description="Per-key limit of POST /api/generate, e.g. 120/minute."
    )
    rate_limit_status: str | None = Field(
        default=None, description="Per-key limit of /api/status, e.g. 600/minute."
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "redis://host:6379/0: rate limits and upstream call budgets shared by every "
            "process of a fleet."
        ),
    )
    max_result_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        description="Largest result the server copies from an upstream provider.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where results are stored: a folder (default <data_dir>/files) or "
        "s3://bucket/prefix for an S3-compatible bucket (credentials: AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible store, e.g. http://minio:9000; default AWS.",
    )
    s3_region: str | None = Field(
        default=None, description="Region of the bucket; default AWS_REGION or us-east-1."
    )
    storage_public_url: str | None = Field(
        default=None,
        description="Base URL of a public bucket: result URLs become "
        "<this>/<prefix>/<task_id>/<name>, fetched from the bucket directly.",
    )
    storage_presign_seconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 24 * 3600,
        description="Serve /files/... by a redirect to a presigned bucket URL valid this long.",
    )
    preview_delay: float = Field(
        default=1.0, ge=0, le=3600, description="Seconds the preview engine takes per task."
    )
    task_deadline: float = Field(
        default=1800,
        gt=0,
        description="Seconds after which an unfinished task fails and is refunded.",
    )
    worker_concurrency: int = Field(
        default=64, ge=1, le=1024, description="Tasks advanced at once (each mostly waits)."
    )
    worker_poll_interval: float = Field(
        default=0.5, gt=0, le=60, description="Seconds between looks for due tasks."
    )
    lease_seconds: float = Field(
        default=60, ge=1, le=3600, description="How long a worker holds a task it claimed."
    )
    status_refresh_timeout: float = Field(
        default=2.0,
        ge=0,
        le=30,
        description="Longest a status call waits on its inline provider refresh.",
    )
    status_refresh_interval: float = Field(
        default=1.0,
        ge=0,
        le=600,
        description="Least seconds between two inline refreshes of one task.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body."
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers (431 beyond).",
    )
    max_download_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest source image the server downloads."
    )
    source_downloads: int = Field(
        default=16, ge=1, le=1024, description="Source images downloading at once, in all."
    )
    source_downloads_per_account: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Source images one account may have downloading at once; its others wait.",
    )
    result_downloads: int = Field(
        default=16, ge=1, le=1024, description="Provider results being copied at once."
    )
    download_min_rate: int = Field(
        default=32 * 1024,
        ge=0,
        description="Bytes per second a download must keep up (after 10 s); slower ones are "
        "cut off. 0: no minimum.",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Let the server fetch URLs on private, loopback or link-local addresses.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of serve and worker: text, or json (one object per line).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port where `imagine worker` serves /metrics, /healthz and /readyz; "
        "unset: none.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the worker's metrics port listens on (0.0.0.0: every interface).",
    )

    @field_validator("rate_limit_generate", "rate_limit_status")
    @classmethod
    def _rate_limit_parses(cls, value: str | None) -> str | None:
        parse_limit(value)
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "redis+unix://")):
            raise ValueError("use redis://host:6379/0 (or rediss:// for TLS)")
        if value:
            try:
                import redis  # noqa: F401 - the `redis` extra; imported by its users anyway
            except ImportError:
                raise ValueError("needs the redis extra: pip install 'imagine[redis]'") from None
        return value or None

    @field_validator("provider")
    @classmethod
    def _provider_is_a_name(cls, value: str) -> str:
        if not _PROVIDER_NAME.match(value):
            raise ValueError("use preview, kie, xai or local")
        return value

    @field_validator("admin_token")
    @classmethod
    def _blank_token_is_off(cls, value: SecretStr | None) -> SecretStr | None:
        # IMAGINE_ADMIN_TOKEN= (empty) turns the admin API off; it is never the empty password.
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "use sqlite+aiosqlite:///path/to.db or postgresql+asyncpg://user@host/db"
            )
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url_is_supported(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if "://" in value:
            parse_s3_url(value)
        return value

    @field_validator("s3_endpoint_url", "storage_public_url")
    @classmethod
    def _storage_urls_are_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")) or "@" in value:
            raise ValueError(
                "must be an http:// or https:// URL (credentials go in AWS_* variables)"
            )
        return value.rstrip("/")

    @field_validator("storage_public_url", "storage_presign_seconds")
    @classmethod
    def _bucket_modes_need_a_bucket(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return None
        if info.data.get("storage_url") is None or "://" not in info.data["storage_url"]:
            raise ValueError("needs IMAGINE_STORAGE_URL=s3://bucket/prefix")
        if info.field_name == "storage_presign_seconds" and info.data.get("storage_public_url"):
            raise ValueError(
                "choose one: a public bucket (IMAGINE_STORAGE_PUBLIC_URL) or presigning"
            )
        return value

    @property
    def s3_location(self) -> tuple[str, str] | None:
        """(bucket, prefix) when results go to a bucket; None for a local folder."""
        if self.storage_url is None or "://" not in self.storage_url:
            return None
        return parse_s3_url(self.storage_url)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'imagine.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        """The folder of local results (IMAGINE_STORAGE_URL when it names one)."""
        if self.storage_url is not None and "://" not in self.storage_url:
            return Path(self.storage_url)
        return self.data_dir / "files"


class SettingsError(Exception):
    """Settings that can't run; the message is one line naming the variable."""


SectionT = TypeVar("SectionT", bound=BaseSettings)


ENV_FILE = ".env"
"""Settings are read from this file in the current folder too (`IMAGINE_ENV_FILE` names
another); the environment wins over the file, and flags over both."""


def env_file() -> Path | None:
    chosen = Path(os.environ.get("IMAGINE_ENV_FILE") or ENV_FILE)
    return chosen if chosen.is_file() else None


def load_section(section: type[SectionT], **overrides: object) -> SectionT:
    """Build one settings class from the environment (and the .env file), or raise a
    one-line SettingsError."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return section(_env_file=env_file(), **clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        prefix = section.model_config.get("env_prefix") or ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {prefix}{field.upper()}: {message}") from None


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (flags), or say what's wrong."""
    return load_section(Settings, **overrides)

"""Settings, read from `IMAGINE_*` environment variables (and flags where natural)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["preview"]


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
    public_url: str | None = Field(
        default=None,
        description="Base of result URLs, e.g. https://imagine.example.com. "
        "Default: the address the server listens on.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the /admin API; the admin API is off when unset."
    )
    provider: ProviderName = Field(default="preview", description="Provider serving every model.")
    preview_delay: float = Field(
        default=1.0, ge=0, le=3600, description="Seconds the preview engine takes per task."
    )
    task_deadline: float = Field(
        default=1800,
        gt=0,
        description="Seconds after which an unfinished task fails and is refunded.",
    )
    worker_concurrency: int = Field(default=8, ge=1, le=1024, description="Tasks advanced at once.")
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
    max_download_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest source image the server downloads."
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Let the server fetch URLs on private, loopback or link-local addresses.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'imagine.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"


class SettingsError(Exception):
    """Settings that can't run; the message is one line naming the variable."""


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (flags), or say what's wrong."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise SettingsError(f"invalid setting IMAGINE_{field.upper()}: {first['msg']}") from None

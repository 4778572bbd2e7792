"""The one settings object, read from ``IONVEIL_*`` environment variables.

Anything invalid fails at start with a message naming the variable, not deep inside a worker.
A missing NATS URL or DSN is not an error: it means "start the embedded server" (see
``workers.embedded``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ionveil.errors import ConfigurationError

__all__ = ["DATABASES", "Settings", "load_settings"]

DATABASES: tuple[str, ...] = ("core", "analytics", "audit")
# What nats-py looks for in IONVEIL_NATS_CREDS (as `nsc generate creds` writes it).
_CREDS_MARKERS = ("BEGIN NATS USER JWT", "BEGIN USER NKEY SEED")


class Settings(BaseSettings):
    """Configuration of an IonVeil process.

    Each field is read from ``IONVEIL_<FIELD>`` (for example ``IONVEIL_CORE_DSN``).
    """

    # An empty variable (``IONVEIL_NATS_URL=`` in a compose file) means "not set", as in
    # tests/infra.py: use the embedded server rather than fail on an empty URL.
    model_config = SettingsConfigDict(env_prefix="IONVEIL_", extra="ignore", env_ignore_empty=True)

    nats_url: str | None = None
    core_dsn: str | None = None
    analytics_dsn: str | None = None
    audit_dsn: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".ionveil")

    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_creds: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None

    http_host: str = "127.0.0.1"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    db_pool_max: int = Field(default=10, ge=1, le=200)
    fetch_batch: int = Field(default=256, ge=1, le=10_000)
    # Added to every contract HTTP port by `ionveil up` / `ionveil worker` (tests, two fleets
    # on one machine): policy listens on 8101 + offset.
    http_port_offset: int = Field(default=0, ge=0, le=50_000)
    # Alerts worker: seconds between check cycles, and notification channels by name
    # (JSON map: name -> "https://..." webhook, "nats:<subject>", or
    # "smtp://host:port?from=a@x&to=b@y,c@z"); see workers/alerts.py.
    alerts_check_interval_s: float = Field(default=30.0, gt=0, le=3600)
    alerts_channels: dict[str, str] = Field(default_factory=dict)
    alerts_default_channels: list[str] = Field(default_factory=list)
    alerts_redis_prefix: str = Field(default="ionveil:alerts", min_length=1, max_length=200)

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("must be nats://, tls://, ws:// or wss:// URLs, comma-separated")
        return value

    @field_validator("core_dsn", "analytics_dsn", "audit_dsn")
    @classmethod
    def _pg_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// DSN")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @field_validator("nats_creds")
    @classmethod
    def _creds_file(cls, value: Path | None) -> Path | None:
        # Checked here because nats-py reads the file only when it connects: an unreadable
        # file fails deep in the worker, one without a seed with a bare TypeError, and one
        # without a user JWT block makes nats-py loop forever (blocking the event loop).
        if value is None:
            return value
        try:
            text = value.read_text(errors="replace")
        except OSError as exc:
            raise ValueError(f"file {value} cannot be read: {exc.strerror or exc}") from None
        for marker in _CREDS_MARKERS:
            if marker not in text:
                raise ValueError(f"file {value} is not a NATS .creds file (no {marker!r} block)")
        return value

    def dsn(self, database: str) -> str | None:
        """The DSN configured for ``database`` (core, analytics or audit), if any."""
        if database not in DATABASES:
            raise ConfigurationError(f"unknown database {database!r}; expected one of {DATABASES}")
        return getattr(self, f"{database}_dsn")


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus ``overrides``) into ``Settings``.

    Raises:
        ConfigurationError: naming each ``IONVEIL_*`` variable that is invalid and why.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"IONVEIL_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None

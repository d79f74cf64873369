"""Settings read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret's text; None when unset or empty (an empty variable is an unset one)."""
    return (secret.get_secret_value() or None) if secret is not None else None


class Settings(BaseSettings):
    """Everything the service reads from its environment; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = None
    retell_api_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    # Where the embedded PostgreSQL keeps its data when DATABASE_URL is unset.
    data_dir: Path = Path(".data")

    # The only way to accept unsigned /retell/* requests; logged as a warning at start.
    insecure_skip_signature_check: bool = False
    signature_tolerance_seconds: int = Field(default=300, ge=1, le=3600)

    min_notice_minutes: int = Field(default=60, ge=0, le=60 * 24 * 30)
    request_deadline_seconds: float = Field(default=3.0, gt=0, le=60)
    ready_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    pool_min_size: int = Field(default=2, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=200)
    pool_acquire_timeout_seconds: float = Field(default=1.5, gt=0, le=60)
    # 0 turns off asyncpg's prepared-statement cache (PgBouncer in transaction mode before 1.21).
    # None: chosen automatically (off when the URL's port is 6543 or has pgbouncer=true).
    statement_cache_size: int | None = Field(default=None, ge=0)

    max_body_bytes: int = Field(default=1 * MIB, ge=1024)
    max_webhook_body_bytes: int = Field(default=16 * MIB, ge=1024)

    default_phone_region: str = Field(default="US", min_length=2, max_length=2)
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    retell_api_base_url: str = "https://api.retellai.com"

    # The notification worker (`python -m service worker`, CONTRACT section 7).
    # A session (direct) connection for the worker's LISTEN when DATABASE_URL is a transaction
    # pooler (the Procfile's release line reads it too).
    direct_database_url: str | None = None
    # http:// webhook targets on loopback, for local testing only.
    notifications_allow_loopback_http: bool = False
    worker_batch_size: int = Field(default=20, ge=1, le=500)
    # A claimed row is another worker's to retry after this long: longer than any one attempt.
    worker_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    # LISTEN/NOTIFY wakes the worker at once; this is the fallback when a wake-up is missed.
    worker_poll_seconds: float = Field(default=5.0, gt=0, le=300)
    # 24 with the default backoff: between about 8 and 15 hours of trying.
    notifications_max_attempts: int = Field(default=24, ge=1, le=100)
    notifications_retry_base_seconds: float = Field(default=10.0, gt=0, le=3600)
    notifications_retry_cap_seconds: float = Field(default=3600.0, gt=0, le=86400)
    # CONTRACT: a receiver that has not answered within 10 s gets the notification again later.
    notifications_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=10)

    # Email (off while SMTP_HOST is unset).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    # starttls (submission, port 587), tls (implicit TLS, port 465) or none (local relays only).
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    # SMS through Twilio (off while TWILIO_ACCOUNT_SID is unset).
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"

    @field_validator("smtp_tls", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> Settings:
        longest = max(self.notifications_webhook_timeout_seconds, self.smtp_timeout_seconds)
        if self.worker_lease_seconds <= longest:
            raise ValueError(
                f"WORKER_LEASE_SECONDS must be longer than one delivery attempt ({longest:g} s)"
            )
        return self

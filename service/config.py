"""Settings read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


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

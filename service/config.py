"""Settings read once from the environment, and the one-line answers for values that are wrong."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import annotated_types
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

MIB = 1024 * 1024

# What operators and platforms write for a level (uvicorn's spelling included), in any case.
_LEVEL_ALIASES = {"warn": "warning", "fatal": "critical", "trace": "debug"}


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FORMATS = ("auto", "json", "console")


def _level(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        level = _LEVEL_ALIASES.get(text, text).upper()
        # Anything else is left as given, so that the refusal quotes what the operator wrote.
        return level if level in _LEVELS else value
    return value


def _format(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in _FORMATS:
        return value.strip().lower()
    return value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_level)
]
LogFormat = Annotated[Literal["auto", "json", "console"], BeforeValidator(_format)]


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret's text; None when unset or empty (an empty variable is an unset one)."""
    return (secret.get_secret_value() or None) if secret is not None else None


# asyncpg's own default is 60 s: far longer than an operator waits for a command to say why.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0


class Settings(BaseSettings):
    """Everything the service reads from its environment; see `.env.example`.

    An empty variable means "not set" (`.env.example` ships `RETELL_API_KEY=`).
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    database_url: str | None = Field(default=None, description="a postgresql:// URL")
    retell_api_key: SecretStr | None = None
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"

    # Where the embedded PostgreSQL keeps its data when DATABASE_URL is unset.
    data_dir: Path = Path(".data")

    # The only way to accept unsigned /retell/* requests; logged as a warning at start.
    insecure_skip_signature_check: bool = False
    signature_tolerance_seconds: int = Field(default=300, ge=1, le=3600)

    min_notice_minutes: int = Field(default=60, ge=0, le=60 * 24 * 30)
    request_deadline_seconds: float = Field(default=3.0, gt=0, le=60)
    # How long `migrate` and `serve`'s start-up (migrations, the demo) wait to connect.
    connect_timeout_seconds: float = Field(default=DEFAULT_CONNECT_TIMEOUT_SECONDS, gt=0, le=120)
    ready_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    pool_min_size: int = Field(default=2, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=200)
    pool_acquire_timeout_seconds: float = Field(default=1.5, gt=0, le=60)
    # 0 turns off asyncpg's prepared-statement cache (PgBouncer in transaction mode before 1.21).
    # None: chosen automatically (off when the URL's port is 6543 or has pgbouncer=true).
    statement_cache_size: int | None = Field(default=None, ge=0)

    max_body_bytes: int = Field(default=1 * MIB, ge=1024)
    max_webhook_body_bytes: int = Field(default=16 * MIB, ge=1024)

    default_phone_region: str = Field(
        default="US", min_length=2, max_length=2, description="a two-letter region such as US"
    )
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    retell_api_base_url: str = Field(
        default="https://api.retellai.com", description="an http:// or https:// URL"
    )

    # The notification worker (`python -m service worker`, CONTRACT section 7).
    # A session (direct) connection for the worker's LISTEN when DATABASE_URL is a transaction
    # pooler (the Procfile's release line reads it too).
    direct_database_url: str | None = Field(default=None, description="a postgresql:// URL")
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

    @field_validator("retell_api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: Any) -> Any:
        # A key of spaces is as absent as an empty one: nothing could be signed with it.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url", "direct_database_url", mode="after")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("postgres", "postgresql"):
            raise ValueError("not a postgresql:// URL")
        return value

    @field_validator("retell_api_base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        return value


class ConfigurationError(Exception):
    """Settings that can't be used: one line per variable (or option) saying what it accepts."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# Values never repeated back: they are credentials, or URLs that carry one.
_SECRET_FIELDS = frozenset(
    {"retell_api_key", "database_url", "direct_database_url", "smtp_password", "twilio_auth_token"}
)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    option_names: Mapping[str, str] | None = None,
    **init: Any,
) -> Settings:
    """Settings from the environment (and `.env`), with command-line `overrides` on top.

    Overrides go through the same validation as the environment; a wrong value raises
    ConfigurationError naming the option (from `option_names`) or the variable.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    names = option_names or {}
    try:
        return Settings(**init, **given)
    except ValidationError as error:
        lines: dict[str, str] = {}
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            label = names.get(field, field.upper()) if field in given else field.upper()
            lines.setdefault(label, _problem(label, field, item.get("input")))
        raise ConfigurationError(list(lines.values())) from None
    except SettingsError as error:
        raise ConfigurationError([f"configuration: {error}"]) from None


def _problem(label: str, field: str, value: Any) -> str:
    info = Settings.model_fields.get(field)
    accepts = _accepts(info) if info is not None else "a valid value"
    shown = "" if field in _SECRET_FIELDS or value is None else f" (got {str(value)!r})"
    return f"{label}: expected {accepts}{shown}"


def _accepts(info: FieldInfo) -> str:
    """What a setting accepts, in words, from its type and constraints."""
    if info.description:
        return info.description
    kind = info.annotation
    if get_origin(kind) is not Literal:
        kind = next((a for a in get_args(kind) if a is not type(None)), kind)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice).lower() for choice in get_args(kind))
    if kind is bool:
        return "true or false"
    bounds = _bounds(info)
    if kind is int:
        return "a whole number" + bounds
    if kind is float:
        return "a number" + bounds
    if kind is Path:
        return "a folder path"
    return "a non-empty value"


def _bounds(info: FieldInfo) -> str:
    ge = gt = le = None
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            ge = rule.ge
        elif isinstance(rule, annotated_types.Gt):
            gt = rule.gt
        elif isinstance(rule, annotated_types.Le):
            le = rule.le
    if ge is not None and le is not None:
        return f" from {ge} to {le}"
    parts = [f"at least {ge}" if ge is not None else "", f"above {gt}" if gt is not None else ""]
    parts.append(f"at most {le}" if le is not None else "")
    words = " and ".join(part for part in parts if part)
    return f" {words}" if words else ""

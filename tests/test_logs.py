"""Logging: one JSON canonical line per request, stdlib loggers through the same renderer, no
phone numbers or secrets in clear."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import structlog

from service.logs import configure_logging, mask_phone
from tests.conftest import post_signed
from tests.factories import Clinic
from tests.test_faults import next_weekday

# A Wednesday two weeks from today: bookable on any day the suite runs.
DAY = next_weekday().isoformat()

Lines = Callable[[], list[dict[str, Any]]]
CALLER = "+16175550163"


def _requests(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == "request"]


async def test_one_canonical_line_per_request(client: httpx.AsyncClient, json_logs: Lines) -> None:
    """Each request writes exactly one JSON line with method, path, status and latency."""
    json_logs()
    await client.get("/healthz")
    await client.get("/nowhere")
    lines = _requests(json_logs())
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("GET", "/healthz", 200),
        ("GET", "/nowhere", 404),
    ]
    for line in lines:
        assert isinstance(line["latency_ms"], float)
        assert line["latency_ms"] >= 0
        assert line["level"] == "info"
        assert line["timestamp"].endswith("Z")


async def test_function_call_line_names_call_agent_function_and_outcome(
    client: httpx.AsyncClient, clinic: Clinic, json_logs: Lines
) -> None:
    """A function call's canonical line carries call_id, agent_id, function and ok."""
    call = {"call_id": "call_log_1", "agent_id": clinic.agent_id, "from_number": CALLER}
    json_logs()
    await post_signed(
        client,
        "/retell/functions/check_availability",
        {"name": "check_availability", "call": call, "args": {"date": DAY}},
    )
    await post_signed(
        client,
        "/retell/functions/check_availability",
        {"name": "check_availability", "call": call, "args": {"date": "January 6"}},
    )
    lines = _requests(json_logs())
    assert [
        (x["path"], x["status"], x["call_id"], x["agent_id"], x["function"], x["ok"]) for x in lines
    ] == [
        (
            "/retell/functions/check_availability",
            200,
            "call_log_1",
            clinic.agent_id,
            "check_availability",
            True,
        ),
        (
            "/retell/functions/check_availability",
            200,
            "call_log_1",
            clinic.agent_id,
            "check_availability",
            False,
        ),
    ]


async def test_request_context_does_not_leak_into_next_request(
    client: httpx.AsyncClient, clinic: Clinic, json_logs: Lines
) -> None:
    """Fields bound during a function call are not repeated on the next request's line."""
    body = {
        "call": {"call_id": "call_log_2", "agent_id": clinic.agent_id},
        "args": {"date": DAY},
    }
    await post_signed(client, "/retell/functions/check_availability", body)
    json_logs()
    await client.get("/healthz")
    (line,) = _requests(json_logs())
    assert "call_id" not in line
    assert "function" not in line


def test_stdlib_loggers_use_the_same_json_renderer(json_logs: Lines) -> None:
    """uvicorn's and asyncpg's own log records come out as the same JSON lines as ours."""
    json_logs()
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 4242)
    logging.getLogger("asyncpg.pool").warning("connection %s was closed", "c1")
    logging.getLogger("uvicorn.access").info("127.0.0.1 - GET /healthz 200")
    structlog.get_logger("service.test").info("our_event", answer=42)
    lines = json_logs()
    assert [(x["logger"], x["level"], x["event"]) for x in lines] == [
        ("uvicorn.error", "info", "Started server process [4242]"),
        ("asyncpg.pool", "warning", "connection c1 was closed"),
        ("service.test", "info", "our_event"),
    ]
    assert lines[2]["answer"] == 42
    for line in lines:
        assert {"event", "level", "logger", "timestamp"} <= set(line)


def test_phone_numbers_and_secrets_masked(json_logs: Lines) -> None:
    """Phone numbers keep only their last two digits; keys and transcripts never appear."""
    json_logs()
    log = structlog.get_logger("service.test")
    log.info("caller", from_number=CALLER, note=f"call back {CALLER} today")
    log.info("secret", retell_api_key="key_live_abc", transcript="Hello, my name is Ann")
    logging.getLogger("asyncpg").info("row for %s", CALLER)
    lines = json_logs()
    text = repr(lines)
    assert CALLER not in text
    assert "6175550163" not in text
    assert lines[0]["from_number"] == "*********63"
    assert lines[0]["note"] == "call back *********63 today"
    assert lines[1]["retell_api_key"] == "[redacted]"
    assert lines[1]["transcript"] == "[21 chars]"
    assert lines[2]["event"] == "row for *********63"


def test_nested_values_and_exceptions_masked(json_logs: Lines) -> None:
    """Numbers inside nested objects and inside a logged exception's text are masked too."""
    json_logs()
    log = structlog.get_logger("service.test")
    log.info("call", call={"from_number": CALLER, "legs": [{"to_number": CALLER}]})
    try:
        raise ValueError(f"Key (patient_phone)=({CALLER}) already exists")
    except ValueError:
        log.exception("failed")
    lines = json_logs()
    assert "6175550163" not in repr(lines)
    assert lines[0]["call"] == {
        "from_number": "*********63",
        "legs": [{"to_number": "*********63"}],
    }
    assert "Key (patient_phone)=(*********63) already exists" in lines[1]["exception"]


@pytest.mark.parametrize(
    ("value", "masked"),
    [("+16175550163", "*********63"), ("617-555-0163", "********63"), ("7", "**")],
)
def test_mask_phone(value: str, masked: str) -> None:
    """mask_phone keeps the last two digits and hides the rest, whatever the formatting."""
    assert mask_phone(value) == masked


async def test_function_call_logs_no_caller_number(
    client: httpx.AsyncClient, clinic: Clinic, json_logs: Lines
) -> None:
    """Serving a caller's request writes nothing that contains their number in clear."""
    json_logs()
    await post_signed(
        client,
        "/retell/functions/leave_voicemail",
        {
            "call": {"call_id": "call_log_3", "agent_id": clinic.agent_id, "from_number": CALLER},
            "args": {"message": f"Call me at {CALLER}", "caller_name": "Ann"},
        },
    )
    lines = json_logs()
    assert _requests(lines)
    assert "6175550163" not in repr(lines)


def test_events_below_the_level_are_not_written() -> None:
    """With LOG_LEVEL=WARNING, our info events and stdlib info records write nothing."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            configure_logging("WARNING", "json")
        log = structlog.get_logger("service.test")
        log.info("quiet", n=1)
        logging.getLogger("asyncpg").info("quiet too")
        log.warning("loud", n=2)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    lines = [orjson.loads(line) for line in buffer.getvalue().splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [("loud", "warning")]

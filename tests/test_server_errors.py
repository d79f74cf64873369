"""Errors as a real HTTP server shows them: an unexpected exception, a client that hangs up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette

from service.retell import sign
from tests.conftest import API_KEY, free_port
from tests.factories import Clinic
from tests.test_app import exploding_speak

PORT = free_port()
Lines = Callable[[], list[dict[str, Any]]]
__all__ = ["exploding_speak"]


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[None]:
    """uvicorn serving `app` on 127.0.0.1:PORT in this event loop, as `serve` runs it."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=PORT,
        log_config=None,
        access_log=False,
        lifespan="on",
        http="httptools",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield
    finally:
        server.should_exit = True
        await task


def raw_request(path: str, body: bytes, *, declared_length: int | None = None) -> bytes:
    length = len(body) if declared_length is None else declared_length
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nX-Retell-Signature: {sign(body, API_KEY)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: status, headers, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


@pytest.mark.usefixtures("exploding_speak")
async def test_unexpected_error_is_logged_once_and_keeps_the_connection(
    make_app: Callable[..., Starlette], clinic: Clinic, json_logs: Lines
) -> None:
    """An unexpected exception: a JSON 500, one log line with the traceback (none from uvicorn),
    and the same keep-alive connection then answers the next request."""
    body = orjson.dumps(
        {
            "name": "check_availability",
            "call": {"call_id": "call_500", "agent_id": clinic.agent_id},
            "args": {"date": (date.today() + timedelta(days=14)).isoformat()},
        }
    )
    async with serving(make_app()):
        json_logs()
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        try:
            writer.write(raw_request("/retell/functions/check_availability", body))
            status, headers, answer = await read_response(reader)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            again, _, health = await read_response(reader)
        finally:
            writer.close()
        lines = json_logs()
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert orjson.loads(answer) == {
        "error": "internal_error",
        "message": "Something went wrong on our side.",
    }
    assert headers.get("connection", "keep-alive") != "close"
    assert (again, orjson.loads(health)) == (200, {"status": "ok"})
    with_traceback = [line for line in lines if "exception" in line]
    assert [line["event"] for line in with_traceback] == ["unhandled_error"]
    assert "secret-internal-detail" in with_traceback[0]["exception"]
    assert not [line for line in lines if "Exception in ASGI" in str(line.get("event"))]
    statuses = [line["status"] for line in lines if line.get("event") == "request"]
    assert statuses == [500, 200]


async def test_client_hanging_up_mid_body_is_one_line(
    make_app: Callable[..., Starlette], clinic: Clinic, db: asyncpg.Connection, json_logs: Lines
) -> None:
    """A client that sends half its declared body and disconnects is logged in one line, without
    a traceback, and nothing is stored."""
    part = b'{"name": "leave_voicemail", "call": {"call_id": "call_cut"'
    async with serving(make_app()):
        json_logs()
        _, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(
            raw_request("/retell/functions/leave_voicemail", part, declared_length=len(part) * 4)
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            lines = json_logs()
            if lines:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        lines += json_logs()
    assert [line["event"] for line in lines] == ["client_disconnected", "request"]
    assert not [line for line in lines if "exception" in line]
    assert await db.fetchval("select count(*) from customer_call_logs") == 0

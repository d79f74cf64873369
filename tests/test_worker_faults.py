"""The worker under faults: killed mid-delivery, the database gone and back, wake-ups missed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from service.config import Settings
from tests.conftest import free_port
from tests.factories import Clinic
from tests.outbox import add_endpoint, outbox_rows, store_voicemail, worker, worker_settings
from tests.service_process import REPO
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


class SilentReceiver:
    """A webhook receiver on 127.0.0.1 that reads each request's headers and never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[bytes] = []
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        self.arrived.set()
        await reader.read()  # until the sender goes away
        writer.close()

    def header(self, index: int, name: str) -> str:
        for line in self.requests[index].decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name:
                return value.strip()
        raise KeyError(name)

    async def __aenter__(self) -> SilentReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def _worker_process(database_url: str, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "worker"],
            cwd=REPO,
            env={
                **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
                "DATABASE_URL": database_url,
                "LOG_FORMAT": "json",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_worker_killed_mid_delivery_is_replaced_after_the_lease(
    db: asyncpg.Connection,
    clinic: Clinic,
    settings: Settings,
    database_url: str,
    no_outbound_http: respx.MockRouter,
    tmp_path: Path,
) -> None:
    """SIGKILL while the receiver holds the request: no one else sends it within the lease;
    after it, another worker delivers it with the same webhook-id."""
    async with SilentReceiver() as receiver:
        hook = f"http://127.0.0.1:{receiver.port}/hook"
        await add_endpoint(db, clinic, target=hook)
        await store_voicemail(db, clinic)
        process = _worker_process(
            database_url,
            tmp_path / "worker.log",
            NOTIFICATIONS_ALLOW_LOOPBACK_HTTP="true",
            WORKER_LEASE_SECONDS="4",
            NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS="3",
            SMTP_TIMEOUT_SECONDS="3",
        )
        try:
            async with asyncio.timeout(20):
                await receiver.arrived.wait()
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        killed_at = time.monotonic()
        sent_id = receiver.header(0, "webhook-id")

    route = no_outbound_http.post(hook).respond(200)
    allowed = worker_settings(settings, notifications_allow_loopback_http=True)
    async with worker(allowed) as w:
        # Within the lease the row is the dead worker's: nothing is claimed.
        assert await w.deliver_due() == 0
        [row] = await outbox_rows(db)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        for _ in range(30):
            if await w.deliver_due() or time.monotonic() - killed_at > 6:
                break
            await asyncio.sleep(0.2)
    assert route.call_count == 1
    assert route.calls.last.request.headers["webhook-id"] == sent_id == str(row["id"])
    [row] = await outbox_rows(db)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


@pytest.fixture
async def proxy(server_url: str) -> AsyncIterator[TcpProxy]:
    url = httpx.URL(server_url)
    tcp = TcpProxy(free_port(), (url.host, url.port or 5432))
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.close()


async def _until_delivered(conn: asyncpg.Connection, count: int, within: float) -> float:
    """Seconds until `count` rows are delivered; fails after `within`."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            rows = await outbox_rows(conn)
            if sum(r["status"] == "delivered" for r in rows) == count:
                return time.monotonic() - started
            await asyncio.sleep(0.02)


async def test_database_down_and_back(
    db: asyncpg.Connection,
    clinic: Clinic,
    settings: Settings,
    database_url: str,
    proxy: TcpProxy,
    no_outbound_http: respx.MockRouter,
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    """With the database cut the worker keeps running; once it is back, what was queued (before
    and during the cut) is delivered, and LISTEN is taken up again."""
    route = no_outbound_http.post().respond(200)
    await add_endpoint(db, clinic)
    await store_voicemail(db, clinic, transcript="Before the cut")
    proxied = str(httpx.URL(database_url).copy_with(host="127.0.0.1", port=proxy.port))
    s = worker_settings(
        settings, database_url=proxied, worker_poll_seconds=2.0, request_deadline_seconds=1.0
    )
    stop = asyncio.Event()
    async with worker(s, listen=True) as w:
        task = asyncio.create_task(w.run(stop))
        try:
            await _until_delivered(db, 1, within=5)
            await proxy.cut()
            await store_voicemail(db, clinic, transcript="During the cut")
            await asyncio.sleep(2)
            assert not task.done()
            assert route.call_count == 1
            await proxy.restore()
            await _until_delivered(db, 2, within=10)
            # Listening again (a second worker_listening): a new row goes out at once, not at
            # the next poll.
            listening = 0
            async with asyncio.timeout(10):
                while listening < 2:
                    await asyncio.sleep(0.1)
                    listening += sum(e["event"] == "worker_listening" for e in json_logs())
            await asyncio.sleep(0.3)
            await store_voicemail(db, clinic, transcript="After the cut")
            assert await _until_delivered(db, 3, within=5) < 1.0
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert route.call_count == 3


async def test_commit_wakes_the_worker_within_a_second(
    db: asyncpg.Connection,
    clinic: Clinic,
    settings: Settings,
    no_outbound_http: respx.MockRouter,
) -> None:
    """LISTEN/NOTIFY: with a 30 s poll, a committed row is delivered well within a second."""
    no_outbound_http.post().respond(200)
    await add_endpoint(db, clinic)
    stop = asyncio.Event()
    async with worker(worker_settings(settings, worker_poll_seconds=30), listen=True) as w:
        task = asyncio.create_task(w.run(stop))
        try:
            await asyncio.sleep(0.5)  # listening by now
            for n in range(3):
                await store_voicemail(db, clinic, transcript=f"Message {n}")
                assert await _until_delivered(db, n + 1, within=5) < 1.0
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def test_worker_with_half_configured_sms_stops_with_one_line(database_url: str) -> None:
    """A Twilio account without its token: exit code 2 and one line naming what is missing."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "worker"],
        cwd=REPO,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "LOG_FORMAT": "json",
            "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_FROM_NUMBER": "+16175550199",
        },
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stdout.decode().strip().splitlines() + done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "TWILIO_AUTH_TOKEN" in lines[0]
    assert "Traceback" not in lines[0]

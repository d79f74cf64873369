"""SIGTERM with requests in flight: each finishes, the pool and the embedded database close."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import signed_headers
from tests.factories import Clinic
from tests.service_process import ServiceProcess, local_http
from tests.test_faults import availability_body, booking_body

pytestmark = pytest.mark.usefixtures(local_http.__name__)

PORT = 18320
EMBEDDED_PORT = 18321


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        PORT,
        tmp_path / "serve.log",
        DATABASE_URL=database_url,
        POOL_MAX_SIZE="12",
        # Long enough that requests held by the test's lock are still in time when it lets go.
        REQUEST_DEADLINE_SECONDS="8",
        POOL_ACQUIRE_TIMEOUT_SECONDS="5",
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


async def _held_backends(db: asyncpg.Connection) -> int:
    # Inside a transaction the statistics views keep their first snapshot unless cleared.
    await db.execute("select pg_stat_clear_snapshot()")
    count: int = await db.fetchval(
        """
        select count(*) from pg_stat_activity
        where application_name = 'clinic-voice-service' and wait_event_type = 'Lock'
          and datname = current_database()
        """
    )
    return count


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    raw = orjson.dumps(body)
    return await client.post(
        f"/retell/functions/{body['name']}", content=raw, headers=signed_headers(raw)
    )


@pytest.mark.slow
async def test_sigterm_lets_in_flight_requests_finish_then_exits(
    service: ServiceProcess, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Requests in flight at SIGTERM all get complete answers; the pool closes; exit within 10 s."""
    await service.wait_ready()
    times = ["09:00", "09:30", "10:00", "10:30", "11:00", "13:00"]
    bodies = [booking_body(clinic, f"call_term_{i}", at) for i, at in enumerate(times)]
    bodies += [availability_body(clinic, f"call_term_check_{i}") for i in range(4)]
    async with httpx.AsyncClient(base_url=service.base_url, timeout=20) as client:
        lock = db.transaction()
        await lock.start()
        await db.execute("lock table appointments in access exclusive mode")
        try:
            in_flight = [asyncio.create_task(post(client, body)) for body in bodies]
            # Every request is inside the database, waiting on the lock, when the signal comes.
            for _ in range(200):
                if await _held_backends(db) == len(bodies):
                    break
                await asyncio.sleep(0.05)
            assert await _held_backends(db) == len(bodies)
            service.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert service.process is not None
            assert service.process.poll() is None, "exited with requests in flight"
        finally:
            await lock.rollback()
        started = asyncio.get_running_loop().time()
        responses = await asyncio.gather(*in_flight)
        code = await service.wait_exit(within=10)
        assert asyncio.get_running_loop().time() - started < 10

    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["ok"] is True
    assert [r.json()["booked"] for r in responses[: len(times)]] == [True] * len(times)
    assert await db.fetchval("select count(*) from appointments") == len(times)
    assert code in (0, 128 + signal.SIGTERM)
    output = service.output()
    assert "database_pool_closed" in output
    assert "Traceback" not in output


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_sigterm_stops_the_embedded_database(tmp_path: Path) -> None:
    """With no DATABASE_URL, SIGTERM stops the embedded PostgreSQL too, within 10 s."""
    data_dir = tmp_path / "data"
    service = ServiceProcess(
        EMBEDDED_PORT,
        tmp_path / "serve.log",
        DATA_DIR=str(data_dir),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
    )
    service.start()
    try:
        await service.wait_ready(within=90)
        postmaster = _postmaster_pid(data_dir)
        assert _alive(postmaster)
        service.signal(signal.SIGTERM)
        await service.wait_exit(within=10)
    finally:
        service.kill()
    for _ in range(50):
        if not _alive(postmaster):
            break
        await asyncio.sleep(0.1)
    assert not _alive(postmaster), service.output()
    assert "embedded_postgres_stopped" in service.output()

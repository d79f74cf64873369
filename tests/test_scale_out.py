"""Scaling out: two service processes on one database, and two migrate runs at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import signed_headers
from tests.factories import Clinic
from tests.service_process import REPO, ServiceProcess, local_http
from tests.test_faults import booking_body

pytestmark = pytest.mark.usefixtures(local_http.__name__)

PORTS = (18330, 18331)


@pytest.fixture
async def two_services(tmp_path: Path, database_url: str) -> AsyncIterator[list[ServiceProcess]]:
    services = [
        ServiceProcess(
            port,
            tmp_path / f"serve-{port}.log",
            DATABASE_URL=database_url,
            # Bookings of one staff member queue on the database's lock; on a loaded test
            # machine the default deadline would turn that queue into 503s, not what is tested.
            REQUEST_DEADLINE_SECONDS="15",
            POOL_ACQUIRE_TIMEOUT_SECONDS="10",
        )
        for port in PORTS
    ]
    for service in services:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in services))
        yield services
    finally:
        for service in services:
            service.kill()


@pytest.mark.slow
async def test_concurrent_bookings_through_two_processes_never_overlap(
    two_services: list[ServiceProcess], db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Forty bookings of overlapping times, split over two processes at once, give one row."""
    # 30 minutes each from 09:45, 09:50, 10:00 and 10:10: every pair overlaps (10:10-10:15 is
    # in all of them), so exactly one of them can be booked with Dr. Lee.
    times = ("10:00", "09:45", "10:10", "09:50")
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=15) for s in two_services]
    try:

        async def book(n: int) -> httpx.Response:
            body = booking_body(clinic, f"call_scale_{n}", times[n % len(times)])
            raw = orjson.dumps(body)
            client = clients[n % 2]
            return await client.post(
                "/retell/functions/book_appointment", content=raw, headers=signed_headers(raw)
            )

        responses = await asyncio.gather(*(book(n) for n in range(40)))
    finally:
        for client in clients:
            await client.aclose()

    assert all(r.status_code == 200 for r in responses), [
        r.text for r in responses if r.status_code != 200
    ]
    results = [r.json() for r in responses]
    booked = [r for r in results if r["ok"]]
    assert len(booked) == 1, booked
    assert {r["reason"] for r in results if not r["ok"]} == {"taken"}
    rows = await db.fetch(
        "select appointment_time, staff_member_id from appointments where status <> 'cancelled'"
    )
    assert len(rows) == 1
    assert rows[0]["staff_member_id"] == clinic.staff["Dr. Ada Lee"]


async def _run_migrate(url: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "migrate",
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")


@pytest.mark.slow
async def test_two_migrate_runs_at_once_apply_each_file_once(server_url: str) -> None:
    """Two `migrate` processes started together both succeed and apply every file exactly once."""
    name = f"svc_scale_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'create database "{name}"')
    url = str(httpx.URL(server_url).copy_with(path=f"/{name}"))
    try:
        results = await asyncio.gather(_run_migrate(url), _run_migrate(url))
        for code, output in results:
            assert code == 0, output
            assert "Traceback" not in output
        files = sorted(p.name for p in (REPO / "schema").glob("*.sql"))
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("select version, name from schema_migrations")
            assert len(versions) == len(files)
            assert await conn.fetchval("select count(*) from agent_configurations") == 0
        finally:
            await conn.close()
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()

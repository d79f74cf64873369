"""The service under database faults: cut, black-holed, down at start, and a pool run dry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import post_signed
from tests.factories import Clinic
from tests.tcp_proxy import TcpProxy

PROXY_PORT = 18301
DEADLINE = 1.0
# Generous bound for "answered, did not hang": the deadline plus scheduling slack on a busy box.
NO_HANG = DEADLINE + 2.0


def next_weekday(weekday: int = 2, weeks_ahead: int = 2) -> date:
    """A date of the given weekday (0 = Monday) at least `weeks_ahead` weeks from today."""
    day = date.today() + timedelta(weeks=weeks_ahead)
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def availability_body(clinic: Clinic, call_id: str = "call_fault") -> dict[str, Any]:
    return {
        "name": "check_availability",
        "call": {"call_id": call_id, "agent_id": clinic.agent_id, "from_number": "+16175550187"},
        "args": {"date": next_weekday().isoformat(), "staff_name": "Dr. Lee"},
    }


def booking_body(clinic: Clinic, call_id: str, time: str = "10:00") -> dict[str, Any]:
    return {
        "name": "book_appointment",
        "call": {"call_id": call_id, "agent_id": clinic.agent_id, "from_number": "+16175550187"},
        "args": {
            "patient_name": "Maria Gonzalez",
            "date": next_weekday().isoformat(),
            "time": time,
            "staff_name": "Dr. Lee",
        },
    }


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            yield c


@pytest.fixture
async def proxy(server_url: str) -> AsyncIterator[TcpProxy]:
    url = httpx.URL(server_url)
    tcp = TcpProxy(PROXY_PORT, (url.host, url.port or 5432))
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.close()


@pytest.fixture
def proxied_app(
    make_app: Callable[..., Starlette], database_url: str, proxy: TcpProxy
) -> Callable[..., Starlette]:
    """Builds the app with its database reached through the proxy and a short deadline."""
    url = httpx.URL(database_url)
    proxied = str(url.copy_with(host="127.0.0.1", port=proxy.port))

    def build(**overrides: Any) -> Starlette:
        settings: dict[str, Any] = {
            "database_url": proxied,
            "request_deadline_seconds": DEADLINE,
            "pool_acquire_timeout_seconds": 0.5,
            "pool_min_size": 1,
        }
        return make_app(**(settings | overrides))

    return build


async def call_function(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    async with asyncio.timeout(NO_HANG):
        return await post_signed(client, f"/retell/functions/{body['name']}", body)


async def readyz(client: httpx.AsyncClient) -> httpx.Response:
    # /readyz promises an answer within about 1 s; the slack covers a loaded test machine.
    async with asyncio.timeout(1.0 + 1.0):
        return await client.get("/readyz")


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "database_unavailable"
    assert response.json()["message"]


async def ready_again(client: httpx.AsyncClient, within: float = 8.0) -> httpx.Response:
    """Poll /readyz until it is 200 (the service recovering by itself), failing after `within`."""
    async with asyncio.timeout(within):
        while True:
            response = await readyz(client)
            if response.status_code == 200:
                return response
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("fault", ["cut", "black_hole"])
async def test_database_fault_answers_503_then_recovers_without_restart(
    proxied_app: Callable[..., Starlette], proxy: TcpProxy, clinic: Clinic, fault: str
) -> None:
    """With the database cut or black-holed, calls and /readyz answer 503 quickly; then recover."""
    async with serving(proxied_app()) as client:
        assert (await call_function(client, availability_body(clinic))).status_code == 200

        await getattr(proxy, fault)()
        for _ in range(3):
            assert_unavailable(await call_function(client, availability_body(clinic)))
        not_ready = await readyz(client)
        assert not_ready.status_code == 503
        expected_check = "unreachable" if fault == "cut" else "timeout"
        assert not_ready.json()["checks"]["database"] == expected_check

        await proxy.restore()
        await ready_again(client)
        recovered = await call_function(client, availability_body(clinic))
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["ok"] is True
        assert recovered.json()["slots"][0]["time"] == "09:00"


async def test_service_starts_while_database_is_down_and_becomes_ready(
    proxied_app: Callable[..., Starlette], proxy: TcpProxy, clinic: Clinic
) -> None:
    """The app starts with the database unreachable, answers 503, and is ready once it returns."""
    await proxy.cut()
    async with serving(proxied_app(pool_min_size=2)) as client:
        assert (await readyz(client)).status_code == 503
        assert_unavailable(await call_function(client, availability_body(clinic)))
        assert (await client.get("/healthz")).status_code == 200

        await proxy.restore()
        await ready_again(client)
        response = await call_function(client, availability_body(clinic))
        assert response.status_code == 200, response.text
        assert response.json()["ok"] is True


async def test_booking_black_holed_midway_writes_nothing_and_recovers(
    proxied_app: Callable[..., Starlette], proxy: TcpProxy, clinic: Clinic, db: asyncpg.Connection
) -> None:
    """A booking whose database goes silent gets 503; after recovery a retry books exactly once."""
    async with serving(proxied_app()) as client:
        assert (await readyz(client)).status_code == 200
        await proxy.black_hole()
        assert_unavailable(await call_function(client, booking_body(clinic, "call_hole")))
        await proxy.restore()
        await ready_again(client)
        retried = await call_function(client, booking_body(clinic, "call_hole"))
        assert retried.status_code == 200, retried.text
        assert retried.json()["booked"] is True
    rows = await db.fetchval("select count(*) from appointments where status <> 'cancelled'")
    assert rows == 1


async def _waiting_backends(db: asyncpg.Connection, database: str) -> int:
    count: int = await db.fetchval(
        """
        select count(*) from pg_stat_activity
        where datname = $1 and application_name = 'clinic-voice-service'
          and wait_event_type = 'Lock'
        """,
        database,
    )
    return count


async def test_pool_exhausted_by_burst_answers_503_and_commits_nothing(
    make_app: Callable[..., Starlette], clinic: Clinic, db: asyncpg.Connection, database_url: str
) -> None:
    """With every pooled connection stuck, a burst waits a bounded time, 503s, writes nothing."""
    app = make_app(
        pool_max_size=2,
        pool_min_size=0,
        pool_acquire_timeout_seconds=0.3,
        request_deadline_seconds=DEADLINE,
    )
    database = httpx.URL(database_url).path.lstrip("/")
    times = [f"{hour:02d}:{minute:02d}" for hour in (9, 10, 13, 14, 15) for minute in (0, 30)]
    async with serving(app) as client:
        lock = db.transaction()
        await lock.start()
        # Every booking now waits on this lock inside the database, holding its connection.
        await db.execute("lock table appointments in access exclusive mode")
        try:
            responses = await asyncio.gather(
                *(
                    call_function(client, booking_body(clinic, f"call_burst_{i}", at))
                    for i, at in enumerate(times)
                )
            )
            for response in responses:
                assert_unavailable(response)
            # The two statements that held connections were cancelled on the server.
            for _ in range(100):
                if not await _waiting_backends(db, database):
                    break
                await asyncio.sleep(0.05)
            assert await _waiting_backends(db, database) == 0
        finally:
            await lock.rollback()
        assert await db.fetchval("select count(*) from appointments") == 0

        after = await call_function(client, booking_body(clinic, "call_after_burst"))
        assert after.status_code == 200, after.text
        assert after.json()["booked"] is True
    assert await db.fetchval("select count(*) from appointments") == 1

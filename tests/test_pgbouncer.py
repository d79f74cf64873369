"""Every function and webhook behind a real PgBouncer in transaction mode (as Supabase pools)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from service import db as service_db
from service.config import Settings
from tests.calls import CALLER, envelope
from tests.conftest import load_fixture, post_signed
from tests.factories import Clinic, add_appointment
from tests.test_faults import next_weekday

PGBOUNCER_PORT = 18310


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


def _wait_for_port(port: int, within: float) -> bool:
    stop = time.monotonic() + within
    while time.monotonic() < stop:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def pgbouncer(server_url: str) -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test server, on its own port."""
    binary = _pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = httpx.URL(server_url)
    # Not pytest's tmp_path: PgBouncer refuses to run as root and drops to `postgres`, which
    # must be able to read its configuration.
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    user = server.username or "postgres"
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""
[databases]
* = host={server.host} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {PGBOUNCER_PORT}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {folder}/pgbouncer.log
"""
    )
    command = [binary]
    if os.geteuid() == 0:
        command += ["-u", "postgres"]
    process = subprocess.Popen(
        [*command, str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not _wait_for_port(PGBOUNCER_PORT, 10):
            process.kill()
            process.wait()
            log_file = folder / "pgbouncer.log"
            pytest.fail(f"pgbouncer did not start: {log_file.read_text()[-2000:]}")
        yield PGBOUNCER_PORT
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def pooled_url(database_url: str, port: int, *, flag: bool) -> str:
    url = httpx.URL(database_url).copy_with(host="127.0.0.1", port=port)
    return str(url.copy_with(query=b"pgbouncer=true")) if flag else str(url)


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            yield c


def body(clinic: Clinic, name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    """A phone call's envelope to this clinic's agent (Retell's example body, these args)."""
    return envelope(name, args, agent_id=clinic.agent_id, call_id=call_id)


async def every_function(
    client: httpx.AsyncClient, clinic: Clinic, appointment_id: str, n: int
) -> None:
    """Calls each of the seven functions once (call n) and checks its answer."""
    day = next_weekday().isoformat()
    later = next_weekday(weeks_ahead=3).isoformat()
    hour = f"{9 + n % 3:02d}:{30 * (n // 3 % 2):02d}"
    staff = ("Dr. Lee", "Dr. Haddad", "Sam Park")[n // 6 % 3]

    async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
        response = await post_signed(
            client, f"/retell/functions/{name}", body(clinic, name, args, f"call_pgb_{n}")
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    slots = await call("check_availability", {"date": day, "staff_name": "Dr. Lee", "days": 2})
    assert slots["ok"] is True
    assert slots["slots"]
    booked = await call(
        "book_appointment",
        {"patient_name": f"Patient {n}", "date": later, "time": hour, "staff_name": staff},
    )
    assert booked["booked"] is True, booked
    found = await call("find_appointments", {})
    assert found["ok"] is True
    assert appointment_id in {a["appointment_id"] for a in found["appointments"]}
    moved = await call(
        "reschedule_appointment",
        {"appointment_id": booked["appointment_id"], "new_date": later, "new_time": "16:00"}
        if n == 0
        else {"appointment_id": booked["appointment_id"], "new_date": later, "new_time": hour},
    )
    assert moved["ok"] is True, moved
    cancelled = await call("cancel_appointment", {"appointment_id": booked["appointment_id"]})
    assert cancelled["cancelled"] is True, cancelled
    saved = await call("leave_voicemail", {"message": f"Message {n}", "caller_name": "Maria"})
    assert saved["saved"] is True
    forward = await call("forward_call", {"reason": "billing"})
    assert forward["ok"] is True


async def webhooks(client: httpx.AsyncClient, clinic: Clinic) -> None:
    for event in ("call_started", "call_ended", "call_analyzed"):
        payload = load_fixture(f"webhook_{event}.json")
        payload["call"]["agent_id"] = clinic.agent_id
        response = await post_signed(client, "/retell/webhook", payload)
        assert response.status_code == 204, response.text
    inbound = load_fixture("webhook_call_inbound.json")
    inbound["call_inbound"]["agent_id"] = clinic.agent_id
    response = await post_signed(client, "/retell/inbound", inbound)
    assert response.status_code == 200
    assert response.json()["call_inbound"]["dynamic_variables"]["business_name"] == (
        "Brightside Dental"
    )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["url_flag", "setting"])
async def test_every_function_works_behind_pgbouncer_transaction_mode(
    pgbouncer: int,
    make_app: Callable[..., Starlette],
    database_url: str,
    clinic: Clinic,
    db: asyncpg.Connection,
    how: str,
) -> None:
    """Through PgBouncer in transaction mode, with the statement cache off, all calls work."""
    url = pooled_url(database_url, pgbouncer, flag=how == "url_flag")
    overrides: dict[str, Any] = {"database_url": url, "pool_max_size": 8}
    if how == "setting":
        overrides["statement_cache_size"] = 0
    settings = Settings(_env_file=None, **overrides)
    assert service_db.statement_cache_size(url, settings) == 0
    appointment = await add_appointment(
        db, clinic.staff["Dr. Ada Lee"], next_weekday(), _time(11), phone=CALLER
    )
    async with serving(make_app(**overrides)) as client:
        # Sequential, then eight at once: more client connections than PgBouncer's three server
        # connections, so statements of different clients meet on one server connection.
        await every_function(client, clinic, str(appointment), 0)
        await asyncio.gather(
            *(every_function(client, clinic, str(appointment), n) for n in range(1, 9))
        )
        await webhooks(client, clinic)
    assert await db.fetchval("select count(*) from appointments where status = 'cancelled'") == 9
    assert await db.fetchval("select count(*) from voicemails") == 9
    assert await db.fetchval("select count(*) from customer_call_logs") >= 1


def _time(hour: int) -> Any:
    from datetime import time as clock_time

    return clock_time(hour)

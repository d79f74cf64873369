"""An operator's first hour, through the command line: settings, start-up and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from service.config import Settings
from service.demo import DEMO_AGENT_ID
from service.migrate import SCHEMA_DIR
from service.retell import sign
from tests.conftest import API_KEY, free_port
from tests.service_process import REPO, ServiceProcess, local_http
from tests.test_app import silent_server

pytestmark = pytest.mark.usefixtures(local_http.__name__)
__all__ = ["silent_server"]

# Picked by the system: nothing listens on CLOSED_PORT once free_port() has returned it.
CLOSED_PORT = free_port()
SERVE_PORT = free_port()
DEMO_PORT = free_port()
SHIPPED = sorted(p.name for p in SCHEMA_DIR.glob("*.sql"))
DEFINITIONS = sorted(p.name for p in SCHEMA_DIR.glob("definitions/*.sql"))


def run_cli(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` from `folder` (no `.env` there), with only `env` set for it."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in Settings.model_fields and k != "SERVICE_COMMAND"
    }
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=folder,
        env={**inherited, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"LOG_LEVEL": "warning"},
        {"LOG_LEVEL": "warn"},
        {"LOG_LEVEL": "debug"},
        {"LOG_LEVEL": "CRITICAL"},
        {"LOG_FORMAT": "JSON"},
        {"PORT": "", "MIN_NOTICE_MINUTES": "", "REQUEST_DEADLINE_SECONDS": "", "LOG_LEVEL": ""},
    ],
)
def test_usual_spellings_and_empty_values_run_the_command(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`tools` runs with levels and formats in any case, uvicorn's aliases, and empty values."""
    result = run_cli(tmp_path, "tools", **env)
    assert result.returncode == 0, result.stderr
    assert len(orjson.loads(result.stdout)) == 7
    assert "Traceback" not in result.stderr


def test_wrong_values_are_one_line_each_and_exit_2(tmp_path: Path) -> None:
    """Every wrong variable gets one line saying what it accepts; exit code 2, no traceback."""
    result = run_cli(
        tmp_path,
        "tools",
        LOG_LEVEL="loud",
        REQUEST_DEADLINE_SECONDS="3s",
        PORT="http",
        DATABASE_URL="mysql://admin:hunter2@db.example/clinic",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "DATABASE_URL: expected a postgresql:// URL",
        "PORT: expected a whole number from 1 to 65535 (got 'http')",
        "LOG_LEVEL: expected one of debug, info, warning, error, critical (got 'loud')",
        "REQUEST_DEADLINE_SECONDS: expected a number above 0 and at most 60 (got '3s')",
    ]


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--port", "99999"], {}, "--port: expected a whole number from 1 to 65535 (got '99999')"),
        (["--port", "0"], {}, "--port: expected a whole number from 1 to 65535 (got '0')"),
        ([], {"PORT": "0"}, "PORT: expected a whole number from 1 to 65535 (got '0')"),
        (["--host", ""], {}, "--host: expected a non-empty value (got '')"),
    ],
)
def test_serve_checks_command_line_values_like_the_environment(
    tmp_path: Path, database_url: str, args: list[str], env: dict[str, str], line: str
) -> None:
    """`serve --port 99999`, `--port 0` and `PORT=0` are all refused the same way, before any
    port is opened."""
    result = run_cli(
        tmp_path, "serve", *args, DATABASE_URL=database_url, RETELL_API_KEY=API_KEY, **env
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]


def test_serve_refuses_a_blank_retell_key(tmp_path: Path, database_url: str) -> None:
    """`RETELL_API_KEY=` (as .env.example ships it) is no key: serve says so and exits 2."""
    result = run_cli(tmp_path, "serve", DATABASE_URL=database_url, RETELL_API_KEY="")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("RETELL_API_KEY is not set: serve needs the Retell API key")


@pytest.mark.parametrize(
    ("base_url", "line"),
    [
        (
            "localhost:18090",
            "--base-url 'localhost:18090' is not a URL like http://HOST:PORT "
            "(did you mean http://localhost:18090?).",
        ),
        (
            "http://localhost:99999",
            "--base-url 'http://localhost:99999' is not a URL like http://HOST:PORT "
            "(port 99999 is out of range).",
        ),
        (
            "http://[::1",
            "--base-url 'http://[::1' is not a URL like http://HOST:PORT (Invalid port: ':1').",
        ),
        (
            "ftp://clinic.example",
            "--base-url 'ftp://clinic.example' is not a URL like http://HOST:PORT.",
        ),
    ],
)
@pytest.mark.parametrize(
    "command", [["call", "check_availability", "--agent-id", "agent_x"], ["tools"]]
)
def test_malformed_base_url_is_one_line(
    tmp_path: Path, command: list[str], base_url: str, line: str
) -> None:
    """`call` and `tools` refuse a --base-url that is not an http(s) URL: one line, exit 2."""
    result = run_cli(tmp_path, *command, "--base-url", base_url, RETELL_API_KEY=API_KEY)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


# --- the database -----------------------------------------------------------------------------


async def test_migrate_accepts_the_urls_serve_accepts(tmp_path: Path, empty_database: str) -> None:
    """`migrate` on a `?pgbouncer=true` URL (as serve takes it) applies every file."""
    result = await asyncio.to_thread(
        run_cli, tmp_path, "migrate", DATABASE_URL=f"{empty_database}?pgbouncer=true"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    conn = await asyncpg.connect(empty_database)
    try:
        applied = await conn.fetchval("select count(*) from schema_migrations")
        defined = await conn.fetchval("select count(*) from schema_definitions")
    finally:
        await conn.close()
    assert (applied, defined) == (len(SHIPPED), len(DEFINITIONS))


def test_migrate_with_the_database_down_is_one_line(tmp_path: Path) -> None:
    """Nothing listening at DATABASE_URL: one line naming HOST:PORT, exit 1, within seconds."""
    started = time.monotonic()
    result = run_cli(
        tmp_path, "migrate", DATABASE_URL=f"postgresql://postgres:pw@127.0.0.1:{CLOSED_PORT}/x"
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cannot reach the database at 127.0.0.1:{CLOSED_PORT}: connection refused"
    ]
    assert "pw" not in result.stdout + result.stderr
    assert time.monotonic() - started < 10


async def test_migrate_against_a_silent_database_gives_up_after_the_connect_timeout(
    tmp_path: Path, silent_server: str
) -> None:
    """A database that accepts but never answers: one line after CONNECT_TIMEOUT_SECONDS."""
    started = time.monotonic()
    result = await asyncio.to_thread(
        run_cli, tmp_path, "migrate", DATABASE_URL=silent_server, CONNECT_TIMEOUT_SECONDS="1"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    address = silent_server.split("@")[1].split("/")[0]
    assert result.stderr.splitlines() == [
        f"cannot reach the database at {address}: no answer within 1 s"
    ]
    assert elapsed < 8


async def test_demo_refuses_to_load_into_database_url_unasked(
    tmp_path: Path, database_url: str, db: asyncpg.Connection
) -> None:
    """`serve --demo` with DATABASE_URL set refuses (exit 2) and loads nothing there."""
    result = await asyncio.to_thread(
        run_cli, tmp_path, "serve", "--demo", DATABASE_URL=database_url, RETELL_API_KEY=API_KEY
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "--demo-into-database" in line
    assert await db.fetchval("select count(*) from agent_configurations") == 0


@pytest.fixture
def demo_into_database(tmp_path: Path, empty_database: str) -> Iterator[ServiceProcess]:
    """`serve --demo --demo-into-database` on a `?pgbouncer=true` URL of an empty database."""
    process = ServiceProcess(
        SERVE_PORT,
        tmp_path / "serve.log",
        args=["--demo", "--demo-into-database"],
        DATABASE_URL=f"{empty_database}?pgbouncer=true",
        DATA_DIR=str(tmp_path / "data"),
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.mark.slow
async def test_demo_loads_into_database_url_when_asked_through_a_pooler_url(
    demo_into_database: ServiceProcess, empty_database: str
) -> None:
    """Asked explicitly, the demo migrates and loads into DATABASE_URL, pgbouncer=true included."""
    await demo_into_database.wait_ready()
    conn = await asyncpg.connect(empty_database)
    try:
        agents = await conn.fetch("select agent_id from agent_configurations")
    finally:
        await conn.close()
    assert [row["agent_id"] for row in agents] == [DEMO_AGENT_ID]


# --- the embedded demo, as a newcomer starts it -------------------------------------------------


@pytest.fixture(scope="module")
async def embedded_demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    """`./dev serve --demo` as .env.example is copied: DATABASE_URL and RETELL_API_KEY blank,
    HOST=::, no XDG_RUNTIME_DIR; started once for this module's tests."""
    folder = tmp_path_factory.mktemp("demo")
    process = ServiceProcess(
        DEMO_PORT,
        folder / "serve.log",
        args=["--demo"],
        unset=["XDG_RUNTIME_DIR"],
        DATABASE_URL="",
        RETELL_API_KEY="",
        HOST="::",
        DATA_DIR=str(folder / "data"),
        SERVICE_COMMAND="./dev",
        LOG_FORMAT="console",
    )
    process.start()
    try:
        await process.wait_ready(within=120)
        yield process
    finally:
        process.signal()
        try:
            await process.wait_exit(within=15)
        finally:
            process.kill()


def _demo_key(process: ServiceProcess) -> str:
    return (Path(process.env["DATA_DIR"]) / "demo_retell_api_key").read_text().strip()


@pytest.fixture
def embedded_serve(tmp_path: Path) -> Iterator[ServiceProcess]:
    """Plain `serve` (no demo) with `DATABASE_URL=` blank, as .env.example ships it."""
    process = ServiceProcess(
        SERVE_PORT, tmp_path / "serve.log", DATABASE_URL="", DATA_DIR=str(tmp_path / "data")
    )
    process.start()
    try:
        yield process
    finally:
        # Stopped, not killed: stopping `serve` stops its embedded PostgreSQL too.
        process.signal()
        assert process.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.process.wait(15)
        process.kill()


@pytest.mark.slow
async def test_blank_database_url_serves_the_embedded_database_migrated(
    embedded_serve: ServiceProcess,
) -> None:
    """`DATABASE_URL=` takes the embedded path like unset: migrated (so ready), and a function
    answers from the schema instead of a 500."""
    await embedded_serve.wait_ready(within=120)
    body = orjson.dumps(
        {
            "name": "check_availability",
            "call": {"call_id": "call_blank_url", "agent_id": "agent_nobody"},
            "args": {"date": (date.today() + timedelta(days=14)).isoformat()},
        }
    )
    async with httpx.AsyncClient(base_url=embedded_serve.base_url, timeout=10) as client:
        ready = await client.get("/readyz")
        answer = await client.post(
            "/retell/functions/check_availability",
            content=body,
            headers={"x-retell-signature": sign(body, API_KEY)},
        )
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}
    # The schema is there: an agent with no clinic is the contract's 404, not a 500.
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "unknown_agent"
    assert "embedded_postgres_started" in embedded_serve.output()


@pytest.mark.slow
async def test_blank_key_with_demo_makes_a_local_key(embedded_demo: ServiceProcess) -> None:
    """`RETELL_API_KEY=` with --demo: the demo makes its key; requests signed with it pass,
    and requests signed with an empty key do not."""
    key = _demo_key(embedded_demo)
    assert key.startswith("demo_")
    body = orjson.dumps({"event": "call_inbound", "call_inbound": {"agent_id": DEMO_AGENT_ID}})
    async with httpx.AsyncClient(base_url=embedded_demo.base_url, timeout=10) as client:
        signed = await client.post(
            "/retell/inbound", content=body, headers={"x-retell-signature": sign(body, key)}
        )
        unsigned = await client.post(
            "/retell/inbound", content=body, headers={"x-retell-signature": sign(body, "")}
        )
    assert signed.status_code == 200
    assert signed.json()["call_inbound"]["dynamic_variables"]["business_name"]
    assert unsigned.status_code == 401


@pytest.mark.slow
async def test_demo_prints_commands_that_work_from_where_it_was_started(
    embedded_demo: ServiceProcess,
) -> None:
    """Started by ./dev, the demo prints `./dev call ...` and a curl line with a bracketed IPv6
    address, and the printed availability command runs as printed."""
    output = embedded_demo.output()
    assert "python -m service call" not in output
    assert f"curl -s http://[::1]:{DEMO_PORT}/readyz" in output
    printed = re.search(r"^  (\./dev call check_availability .*\\\n.*)$", output, re.MULTILINE)
    assert printed is not None, output
    command = printed.group(1).replace("\\\n", " ")
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 0: slots offered, 1: the function answered ok false (a weekend); either way it ran.
    assert result.returncode in (0, 1), result.stderr + result.stdout
    assert "Agent says:" in result.stdout


@pytest.mark.slow
async def test_embedded_start_prints_no_runtime_dir_warning(embedded_demo: ServiceProcess) -> None:
    """Starting the embedded database with XDG_RUNTIME_DIR unset prints no RuntimeDirWarning."""
    output = embedded_demo.output()
    assert "embedded_postgres_started" in output
    assert "RuntimeDirWarning" not in output
    assert "XDG_RUNTIME_DIR" not in output

"""A migrated database per test session, a clean state per test, the app with its lifespan, and
a client that signs requests as Retell does."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import respx
import structlog
from starlette.applications import Starlette

from service.app import create_app
from service.config import Settings
from service.logs import configure_logging
from service.migrate import migrate
from service.retell import sign
from tests.factories import Clinic, create_clinic

API_KEY = "test-retell-key-0123456789"
LOCAL_SERVER = ("127.0.0.1", 5432)
SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

APP_TABLES = (
    "appointments, voicemails, call_scripts, staff_time_off, staff_availability, staff_members, "
    "customer_call_logs, agent_configs, profiles, agent_configurations"
)
# The outbox keeps no foreign keys, so truncating the clinics does not empty it.
OUTBOX_TABLES = "notifications, notification_endpoints"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the system picks it), so that runs
    side by side don't fight over a fixed one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _local_server_answers() -> bool:
    try:
        with socket.create_connection(LOCAL_SERVER, timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: the one on 127.0.0.1:5432 when it answers, else an embedded one.

    TEST_EMBEDDED_DATABASE=1 always starts an embedded one: a child of this process, it shares
    its clock (`./dev test-ahead` moves both a year ahead).
    """
    if os.environ.get("TEST_DATABASE_SERVER_URL"):
        yield os.environ["TEST_DATABASE_SERVER_URL"]
    elif _local_server_answers() and not os.environ.get("TEST_EMBEDDED_DATABASE"):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        from service.db import start_embedded

        server = start_embedded(tmp_path_factory.mktemp("embedded"))
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def _with_database(url: str, name: str) -> str:
    parts = httpx.URL(url)
    return str(parts.copy_with(path=f"/{name}"))


@contextlib.asynccontextmanager
async def new_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A brand-new empty database on the server, dropped on the way out."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A brand-new empty database on the test server, dropped afterwards."""
    async with new_database(server_url, "svc_migrate") as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database of this session's own, migrated; dropped at the end."""
    async with new_database(server_url, "svc_test") as url:
        await migrate(url)
        yield url


async def _connect(url: str) -> asyncpg.Connection:
    """A connection for tests, with jsonb decoded as the service decodes it."""
    conn = await asyncpg.connect(url)
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    return conn


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging rows and asserting on them; tables start empty."""
    conn = await _connect(database_url)
    await conn.execute(f"truncate {OUTBOX_TABLES}, {APP_TABLES}, auth.users cascade")
    try:
        yield conn
    finally:
        await conn.close()


class Clock:
    """A settable clock for the app: now() is fixed until a test moves it."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retell_api_key=API_KEY,  # type: ignore[arg-type]
        log_format="json",
        _env_file=None,
    )


@pytest.fixture
def make_app(settings: Settings, clock: Clock) -> Callable[..., Starlette]:
    def build(**overrides: Any) -> Starlette:
        return create_app(settings.model_copy(update=overrides), clock=clock)

    return build


@pytest.fixture
async def app(
    make_app: Callable[..., Starlette], db: asyncpg.Connection
) -> AsyncIterator[Starlette]:
    """The app with its lifespan running (pool and HTTP client open)."""
    application = make_app()
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
        yield c


@pytest.fixture(autouse=True)
def no_outbound_http() -> Iterator[respx.MockRouter]:
    """Every outbound HTTP call must be mocked by the test; an unmocked one fails."""
    with respx.mock(assert_all_called=False) as router:
        # The in-process app is reached through ASGITransport, which respx does not intercept.
        yield router


def signed_headers(
    body: bytes, key: str = API_KEY, timestamp_ms: int | None = None
) -> dict[str, str]:
    return {"content-type": "application/json", "x-retell-signature": sign(body, key, timestamp_ms)}


async def post_signed(
    client: httpx.AsyncClient,
    path: str,
    body: Any,
    *,
    key: str = API_KEY,
    timestamp_ms: int | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a body (an object, or exact bytes) with a valid Retell signature."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(
        path, content=raw, headers=signed_headers(raw, key, timestamp_ms), params=params
    )


def load_fixture(name: str) -> dict[str, Any]:
    """One of Retell's example bodies from shared/retell/fixtures (a copy is kept in tests/)."""
    for directory in (SHARED_DIR / "retell" / "fixtures", FIXTURES_DIR):
        path = directory / name
        if path.exists():
            value: dict[str, Any] = orjson.loads(path.read_bytes())
            return value
    raise FileNotFoundError(name)


@pytest.fixture
async def clinic(db: asyncpg.Connection) -> Clinic:
    """Brightside Dental: America/New_York, three staff, weekday hours with a lunch break."""
    return await create_clinic(db)


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Logging configured as in production with JSON output; returns the lines written so far.

    configure_logging binds its handler to sys.stdout as it is at that moment; pytest's capsys
    swaps sys.stdout between a fixture's set-up and the test body, so stdout is redirected here
    to a buffer of our own for the duration of the configuration call.
    """
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        configure_logging("INFO", "json")
    read_upto = 0

    def read() -> list[dict[str, Any]]:
        nonlocal read_upto
        text = buffer.getvalue()
        new, read_upto = text[read_upto:], len(text)
        return [orjson.loads(line) for line in new.splitlines()]

    try:
        yield read
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.fixture(scope="module")
async def module_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection shared by a module's tests (see rollback_db)."""
    conn = await _connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def rollback_db(
    module_connection: asyncpg.Connection,
) -> AsyncIterator[asyncpg.Connection]:
    """Like `db`, but the whole test runs in one transaction that is rolled back at the end.

    Much cheaper than truncating, for tests that only talk to the database through this one
    connection (not through the app's pool, and not from several connections at once). A
    statement expected to fail must run in a savepoint (`async with conn.transaction()`).
    """
    transaction = module_connection.transaction()
    await transaction.start()
    try:
        # Rows committed by earlier tests: deleted inside the transaction, so they come back.
        for table in (*OUTBOX_TABLES.split(", "), *APP_TABLES.split(", "), "auth.users"):
            await module_connection.execute(f"delete from {table}")  # noqa: S608
        yield module_connection
    finally:
        await transaction.rollback()

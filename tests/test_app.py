"""The service skeleton: health endpoints, error bodies, settings, and the Retell signature."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from service import functions
from service.config import Settings
from service.retell import sign, signature_is_valid
from tests.conftest import API_KEY, _with_database, post_signed
from tests.factories import Clinic

CLOSED_PORT = 18611
SILENT_PORT = 18612


@asynccontextmanager
async def running(app: Starlette, *, raise_errors: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app whose lifespan runs for the duration of the block."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            yield c


# --- health -----------------------------------------------------------------------------------


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    """GET /healthz is 200 while the process runs."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_ok(client: httpx.AsyncClient) -> None:
    """GET /readyz is 200 and names its checks when the database answers."""
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_readyz_503_when_database_port_closed(
    make_app: Callable[..., Starlette],
) -> None:
    """With nothing listening at the database's address, the app still starts and /readyz is 503."""
    app = make_app(database_url=f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/nowhere")
    async with running(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready"
    assert body["checks"] == {"database": "unreachable"}
    assert body["message"]


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: a hung database."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", SILENT_PORT)
    try:
        yield f"postgresql://postgres@127.0.0.1:{SILENT_PORT}/hung"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_readyz_answers_within_its_deadline_when_database_hangs(
    make_app: Callable[..., Starlette], silent_server: str
) -> None:
    """A database that accepts but never answers makes /readyz 503 "timeout" after ~1 s."""
    app = make_app(database_url=silent_server, pool_min_size=0)
    async with running(app) as client:
        started = time.monotonic()
        response = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "timeout"}
    # The deadline is part of the contract (1 s), not a speed measurement.
    assert elapsed < 2.5


async def test_readyz_503_when_database_dropped(
    make_app: Callable[..., Starlette], server_url: str
) -> None:
    """After the service's database is dropped under it, /readyz and function calls are 503."""
    name = f"svc_ready_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'create database "{name}"')
        app = make_app(database_url=_with_database(server_url, name))
        async with running(app) as client:
            assert (await client.get("/readyz")).status_code == 200
            await admin.execute(f'drop database "{name}" with (force)')
            response = await client.get("/readyz")
            call = await post_signed(
                client,
                "/retell/functions/check_availability",
                {"call": {"agent_id": "agent_x"}, "args": {"date": "2027-01-06"}},
            )
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready"
    assert body["checks"] == {"database": "unreachable"}
    # A function call then is a 503 the caller can retry, not a 500.
    assert call.status_code == 503
    assert call.json()["error"] == "database_unavailable"


# --- errors -----------------------------------------------------------------------------------


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    """An unknown path answers 404 with the JSON error shape."""
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "not_found", "message": "Not Found"}


async def test_wrong_method_is_json_405(client: httpx.AsyncClient) -> None:
    """A known path with the wrong method answers 405 with the JSON error shape."""
    response = await client.post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.fixture
def exploding_speak(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_availability's speak raises an unexpected error carrying a secret."""

    def explode(*args: Any) -> dict[str, Any]:
        raise RuntimeError("secret-internal-detail")

    function = functions.FUNCTIONS["check_availability"]
    monkeypatch.setitem(
        functions.FUNCTIONS, "check_availability", dataclasses.replace(function, speak=explode)
    )


@pytest.mark.usefixtures("exploding_speak")
async def test_unexpected_error_is_json_500_without_traceback(
    make_app: Callable[..., Starlette], clinic: Clinic
) -> None:
    """An unexpected exception answers a generic JSON 500: no traceback, no exception text."""
    body = {
        "name": "check_availability",
        "call": {"call_id": "call_1", "agent_id": clinic.agent_id},
        "args": {"date": "2027-01-06"},
    }
    async with running(make_app(), raise_errors=False) as client:
        response = await post_signed(client, "/retell/functions/check_availability", body)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "Something went wrong on our side.",
    }
    assert "Traceback" not in response.text
    assert "secret-internal-detail" not in response.text


# --- settings ---------------------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No service variable inherited from the machine running the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_settings_read_from_environment(clean_environment: pytest.MonkeyPatch) -> None:
    """Every setting comes from its upper-case environment variable."""
    env = {
        "DATABASE_URL": "postgresql://u@db.example:5432/clinic",
        "RETELL_API_KEY": "key_from_env",
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "LOG_LEVEL": "DEBUG",
        "INSECURE_SKIP_SIGNATURE_CHECK": "true",
        "MIN_NOTICE_MINUTES": "15",
        "READY_TIMEOUT_SECONDS": "0.5",
        "STATEMENT_CACHE_SIZE": "0",
    }
    for name, value in env.items():
        clean_environment.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.database_url == env["DATABASE_URL"]
    assert settings.retell_api_key is not None
    assert settings.retell_api_key.get_secret_value() == "key_from_env"
    assert (settings.host, settings.port, settings.log_level) == ("0.0.0.0", 9000, "DEBUG")
    assert settings.insecure_skip_signature_check is True
    assert settings.min_notice_minutes == 15
    assert settings.ready_timeout_seconds == 0.5
    assert settings.statement_cache_size == 0
    # The key never shows in a repr (which is what ends up in logs and tracebacks).
    assert "key_from_env" not in repr(settings)


def test_settings_defaults(clean_environment: pytest.MonkeyPatch) -> None:
    """Unset, the service listens on 127.0.0.1:8080, checks signatures and uses the embedded DB."""
    settings = Settings(_env_file=None)
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.database_url is None
    assert settings.retell_api_key is None
    assert settings.insecure_skip_signature_check is False
    assert settings.signature_tolerance_seconds == 300
    assert settings.min_notice_minutes == 60


@pytest.mark.parametrize(
    ("name", "value"), [("PORT", "0"), ("PORT", "http"), ("LOG_LEVEL", "LOUD")]
)
def test_settings_refuse_bad_values(
    clean_environment: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A malformed environment variable stops start-up with a validation error."""
    clean_environment.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_env_example_lists_every_setting() -> None:
    """.env.example documents every setting the service reads."""
    example = os.path.dirname(__file__) + "/../.env.example"
    with open(example, encoding="utf-8") as handle:
        text = handle.read()
    missing = [n.upper() for n in Settings.model_fields if n.upper() not in text]
    assert missing == []


# --- the Retell signature ---------------------------------------------------------------------

VECTOR_BODY = b'{"event":"call_ended"}'
VECTOR_DIGEST = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"


def test_signature_matches_official_test_vector() -> None:
    """sign() reproduces the Retell SDKs' own test vector, and the check accepts it."""
    header = sign(VECTOR_BODY, "test-api-key", 1_700_000_000_000)
    assert header == f"v=1700000000000,d={VECTOR_DIGEST}"
    assert signature_is_valid(VECTOR_BODY, header, "test-api-key", now_ms=1_700_000_000_000)
    assert signature_is_valid(VECTOR_BODY, header, "test-api-key", now_ms=1_700_000_299_000)
    assert not signature_is_valid(VECTOR_BODY, header, "test-api-key", now_ms=1_700_000_301_000)
    assert not signature_is_valid(VECTOR_BODY, header, "test-api-key", now_ms=1_699_999_699_000)
    assert not signature_is_valid(VECTOR_BODY, header, "other-key", now_ms=1_700_000_000_000)
    assert not signature_is_valid(
        VECTOR_BODY + b" ", header, "test-api-key", now_ms=1_700_000_000_000
    )


def test_signature_covers_raw_non_ascii_bytes() -> None:
    """A body with accents is signed over its exact UTF-8 bytes, not a re-serialisation."""
    raw = '{"transcript":"José Müller, ¿mañana?"}'.encode()
    header = sign(raw, API_KEY, 1_700_000_000_000)
    assert signature_is_valid(raw, header, API_KEY, now_ms=1_700_000_000_000)
    reserialised = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    assert reserialised != raw
    assert not signature_is_valid(reserialised, header, API_KEY, now_ms=1_700_000_000_000)


def _voicemail_body(clinic: Clinic) -> bytes:
    body = {
        "name": "leave_voicemail",
        "call": {
            "call_id": "call_sig",
            "agent_id": clinic.agent_id,
            "direction": "inbound",
            "from_number": "+16175550163",
            "to_number": "+16175550100",
        },
        "args": {"message": "Bitte rufen Sie mich zurück, José.", "caller_name": "José Núñez"},
    }
    return orjson.dumps(body)


async def test_signed_non_ascii_request_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A correctly signed request whose body has accents is served and stores its row."""
    raw = _voicemail_body(clinic)
    response = await post_signed(client, "/retell/functions/leave_voicemail", raw)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    assert await db.fetchval("select caller_name from voicemails") == "José Núñez"


def _bad_signatures(raw: bytes) -> dict[str, str | None]:
    now = int(time.time() * 1000)
    good = sign(raw, API_KEY, now)
    return {
        "missing": None,
        "empty": "",
        "malformed": "sha256=abcdef",
        "uppercase_digest": good.upper().replace("V=", "v=").replace(",D=", ",d="),
        "no_timestamp": good.split(",", 1)[1],
        "stale": sign(raw, API_KEY, now - 301_000),
        "future": sign(raw, API_KEY, now + 301_000),
        "wrong_key": sign(raw, "not-the-key", now),
        "other_body": sign(raw + b" ", API_KEY, now),
    }


async def test_bad_signature_is_401_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A missing, malformed, stale, future or wrong signature gets a JSON 401 and stores nothing."""
    raw = _voicemail_body(clinic)
    for kind, header in _bad_signatures(raw).items():
        headers = {"content-type": "application/json"}
        if header is not None:
            headers["x-retell-signature"] = header
        response = await client.post(
            "/retell/functions/leave_voicemail", content=raw, headers=headers
        )
        assert response.status_code == 401, kind
        assert response.json() == {
            "error": "invalid_signature",
            "message": "The X-Retell-Signature header is not valid.",
        }, kind
    assert await db.fetchval("select count(*) from voicemails") == 0
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_unknown_function_still_needs_signature(client: httpx.AsyncClient) -> None:
    """An unsigned request is refused before the function name is even looked at."""
    response = await client.post("/retell/functions/no_such_function", content=b"{}")
    assert response.status_code == 401


async def test_skip_signature_setting_warns_at_start(
    make_app: Callable[..., Starlette],
    clinic: Clinic,
    db: asyncpg.Connection,
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    """INSECURE_SKIP_SIGNATURE_CHECK logs a warning at start and then accepts unsigned calls."""
    app = make_app(insecure_skip_signature_check=True)
    async with running(app) as client:
        warnings = [line for line in json_logs() if line.get("level") == "warning"]
        response = await client.post(
            "/retell/functions/leave_voicemail", content=_voicemail_body(clinic)
        )
    assert [w["event"] for w in warnings] == ["signature_check_disabled"]
    assert response.status_code == 200
    assert await db.fetchval("select count(*) from voicemails") == 1


async def test_signature_checked_by_default_without_warning(
    make_app: Callable[..., Starlette], json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """With the default settings no signature warning is logged at start."""
    async with running(make_app()):
        lines = json_logs()
    assert not [line for line in lines if line.get("event") == "signature_check_disabled"]

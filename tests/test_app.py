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
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from service import app as app_module
from service import functions
from service.config import ConfigurationError, Settings, load_settings
from service.migrate import SCHEMA_DIR, migrate
from service.retell import sign, signature_is_valid
from tests.conftest import API_KEY, _with_database, post_signed
from tests.factories import Clinic
from tests.test_faults import next_weekday

# A Wednesday two weeks from today: bookable on any day the suite runs.
DAY = next_weekday().isoformat()

CLOSED_PORT = 18611


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
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}


def _shipped() -> list[str]:
    """Every file of schema/ that migrate applies, named as /readyz names them."""
    versioned = [p.name for p in sorted(SCHEMA_DIR.glob("*.sql"))]
    definitions = [f"definitions/{p.name}" for p in sorted(SCHEMA_DIR.glob("definitions/*.sql"))]
    return versioned + definitions


async def test_readyz_503_names_schema_files_not_applied(
    make_app: Callable[..., Starlette], empty_database: str, tmp_path: Path
) -> None:
    """A database whose schema is behind the code (a release that shipped one more file than was
    applied) is not ready; the body names the missing file; after `migrate` the app is ready."""
    *applied, missing = _shipped()
    for name in applied:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    await migrate(empty_database, tmp_path)
    async with running(make_app(database_url=empty_database)) as client:
        behind = await client.get("/readyz")
        await migrate(empty_database)
        caught_up = await client.get("/readyz")
    assert behind.status_code == 503
    body = behind.json()
    assert body["error"] == "not_ready"
    assert body["checks"] == {"database": "ok", "migrations": "pending"}
    assert body["pending_migrations"] == [missing]
    assert missing in body["message"]
    assert caught_up.status_code == 200


async def test_readyz_checks_the_schema_again_after_its_recheck_interval(
    make_app: Callable[..., Starlette], empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema found complete is checked again once SCHEMA_RECHECK_SECONDS have passed: a
    ledger that loses a file (a restored backup) makes /readyz 503 again."""
    await migrate(empty_database)
    monkeypatch.setattr(app_module, "SCHEMA_RECHECK_SECONDS", 0.0)
    name = _shipped()[-1]
    async with running(make_app(database_url=empty_database)) as client:
        ready = await client.get("/readyz")
        conn = await asyncpg.connect(empty_database)
        try:
            await conn.execute(
                "delete from schema_definitions where file_name = $1", name.split("/")[-1]
            )
        finally:
            await conn.close()
        behind = await client.get("/readyz")
    assert ready.status_code == 200
    assert behind.status_code == 503
    assert behind.json()["pending_migrations"] == [name]


async def test_readyz_503_on_a_database_never_migrated(
    make_app: Callable[..., Starlette], empty_database: str
) -> None:
    """On an empty database (no ledger at all) every shipped file is named as missing."""
    async with running(make_app(database_url=empty_database)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["pending_migrations"] == _shipped()


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

    # Port 0: the system picks a free one, so a parallel run elsewhere can't hold it.
    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/hung"
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
        await migrate(_with_database(server_url, name))
        app = make_app(database_url=_with_database(server_url, name))
        async with running(app) as client:
            assert (await client.get("/readyz")).status_code == 200
            await admin.execute(f'drop database "{name}" with (force)')
            response = await client.get("/readyz")
            call = await post_signed(
                client,
                "/retell/functions/check_availability",
                {"call": {"agent_id": "agent_x"}, "args": {"date": DAY}},
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


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/readyz", {"GET", "HEAD"}),
        ("GET", "/retell/webhook", {"POST"}),
        ("DELETE", "/retell/functions/check_availability", {"POST"}),
    ],
)
async def test_405_says_which_methods_are_allowed(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    """A 405 carries the `Allow` header listing the path's methods (RFC 9110)."""
    response = await client.request(method, path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


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
        "args": {"date": DAY},
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
    ("name", "value", "line"),
    [
        ("PORT", "0", "PORT: expected a whole number from 1 to 65535 (got '0')"),
        ("PORT", "http", "PORT: expected a whole number from 1 to 65535 (got 'http')"),
        (
            "LOG_LEVEL",
            "LOUD",
            "LOG_LEVEL: expected one of debug, info, warning, error, critical (got 'LOUD')",
        ),
        (
            "REQUEST_DEADLINE_SECONDS",
            "3s",
            "REQUEST_DEADLINE_SECONDS: expected a number above 0 and at most 60 (got '3s')",
        ),
        (
            "INSECURE_SKIP_SIGNATURE_CHECK",
            "maybe",
            "INSECURE_SKIP_SIGNATURE_CHECK: expected true or false (got 'maybe')",
        ),
        ("DATABASE_URL", "mysql://u:hunter2@db/x", "DATABASE_URL: expected a postgresql:// URL"),
        (
            "DIRECT_DATABASE_URL",
            "db.example:5432",
            "DIRECT_DATABASE_URL: expected a postgresql:// URL",
        ),
    ],
)
def test_settings_refuse_bad_values_in_one_line(
    clean_environment: pytest.MonkeyPatch, name: str, value: str, line: str
) -> None:
    """A wrong variable is one line naming it and what it accepts (never a secret it holds)."""
    clean_environment.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(_env_file=None)
    assert refused.value.lines == [line]


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("LOG_LEVEL", "warning", "log_level", "WARNING"),
        ("LOG_LEVEL", "warn", "log_level", "WARNING"),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("LOG_LEVEL", "CRITICAL", "log_level", "CRITICAL"),
        ("LOG_LEVEL", "Fatal", "log_level", "CRITICAL"),
        ("LOG_LEVEL", "trace", "log_level", "DEBUG"),
        ("LOG_FORMAT", "JSON", "log_format", "json"),
        ("LOG_FORMAT", " Console ", "log_format", "console"),
        ("PORT", "", "port", 8080),
        ("MIN_NOTICE_MINUTES", "", "min_notice_minutes", 60),
        ("REQUEST_DEADLINE_SECONDS", "", "request_deadline_seconds", 3.0),
        ("DATABASE_URL", "", "database_url", None),
        ("RETELL_API_KEY", "", "retell_api_key", None),
        ("RETELL_API_KEY", "   ", "retell_api_key", None),
    ],
)
def test_settings_accept_any_case_aliases_and_empty_values(
    clean_environment: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    """Levels and formats in any case, uvicorn's aliases; an empty value is the default."""
    clean_environment.setenv(name, value)
    assert getattr(load_settings(_env_file=None), field) == expected


def test_command_line_values_are_checked_like_the_environment(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    """An override is validated as its variable would be, and named as its option."""
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"port": "99999"}, option_names={"port": "--port"}, _env_file=None)
    assert refused.value.lines == ["--port: expected a whole number from 1 to 65535 (got '99999')"]
    assert load_settings({"port": "9001"}, _env_file=None).port == 9001


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

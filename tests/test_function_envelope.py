"""The custom-function endpoint: envelopes, status codes, one round trip, the canonical log line."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import structlog
from pydantic import SecretStr
from starlette.applications import Starlette

from tests.calls import MONDAY_MORNING, WEDNESDAY, call, envelope, signed_at
from tests.conftest import Clock, load_fixture, post_signed, signed_headers
from tests.factories import Clinic

BOOK = "/retell/functions/book_appointment"
BOOKING_ARGS = {
    "patient_name": "Maria Gonzalez",
    "patient_phone": "(617) 555-0187",
    "date": WEDNESDAY,
    "time": "09:00",
}


@pytest.fixture(autouse=True)
def monday_morning(clock: Clock) -> None:
    clock.now = MONDAY_MORNING


async def post(
    client: httpx.AsyncClient,
    clock: Clock,
    path: str,
    body: Any,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return await post_signed(client, path, body, timestamp_ms=signed_at(clock), params=params)


async def test_args_only_payload_with_query_parameters(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An args-only body takes agent_id and call_id from the query; the booking links the call."""
    body = load_fixture("custom_function_book_appointment_args_only.json")
    body["date"] = WEDNESDAY
    response = await post(
        client, clock, BOOK, body, params={"agent_id": clinic.agent_id, "call_id": "call_q"}
    )
    assert response.status_code == 200
    assert response.json()["ok"] is True
    row = await db.fetchrow(
        "select a.patient_phone, l.retell_call_id, l.agent_configuration_id"
        " from appointments a join customer_call_logs l on l.id = a.call_log_id"
    )
    assert row is not None
    assert (row["patient_phone"], row["retell_call_id"]) == ("+16175550187", "call_q")
    assert row["agent_configuration_id"] == clinic.configuration_id


async def test_args_only_payload_without_call_id(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Without call_id the booking is made, linked to no call."""
    response = await post(client, clock, BOOK, BOOKING_ARGS, params={"agent_id": clinic.agent_id})
    assert response.json()["ok"] is True
    assert await db.fetchval("select call_log_id from appointments") is None
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["message"]
    return response.status_code, body["error"]


async def test_unknown_function_is_404(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """A function name the service doesn't have is 404."""
    response = await post(
        client, clock, "/retell/functions/order_pizza", envelope("order_pizza", {})
    )
    assert error_of(response) == (404, "unknown_function")


async def test_unknown_or_inactive_agent_is_404(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An agent_id with no active configuration is 404, in the call or the query; nothing kept."""
    response = await post(
        client, clock, BOOK, envelope("book_appointment", BOOKING_ARGS, agent_id="agent_nope")
    )
    assert error_of(response) == (404, "unknown_agent")
    response = await post(client, clock, BOOK, BOOKING_ARGS, params={"agent_id": "agent_nope"})
    assert error_of(response) == (404, "unknown_agent")
    await db.execute("update agent_configurations set is_active = false")
    for name in ("book_appointment", "leave_voicemail", "forward_call", "find_appointments"):
        args = {**BOOKING_ARGS, "message": "Hello"}
        response = await post(
            client, clock, f"/retell/functions/{name}", envelope(name, args, call_id="c_inact")
        )
        assert error_of(response) == (404, "unknown_agent"), name
    for table in ("appointments", "voicemails", "customer_call_logs"):
        assert await db.fetchval(f"select count(*) from {table}") == 0  # noqa: S608


MALFORMED_REQUESTS_CASES = [
    (BOOKING_ARGS, None, 422, "malformed_envelope"),
    (
        {"name": "book_appointment", "call": "call_1", "args": {}},
        None,
        422,
        "malformed_envelope",
    ),
    (
        {"name": "book_appointment", "call": {"agent_id": "a", "call_id": 5}, "args": {}},
        None,
        422,
        "malformed_envelope",
    ),
    (
        {"name": "book_appointment", "call": {"call_id": "c"}, "args": {}},
        None,
        422,
        "malformed_envelope",
    ),
    (b"not json at all", None, 400, "invalid_json"),
    (b"[1, 2, 3]", None, 400, "invalid_json"),
    (b'"a string"', None, 400, "invalid_json"),
    (b"", None, 400, "invalid_json"),
]


async def test_malformed_requests(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """Bodies that aren't JSON objects are 400; envelopes without a tenant are 422."""
    for body, params, status, code in MALFORMED_REQUESTS_CASES:
        response = await post(client, clock, BOOK, body, params=params)
        assert error_of(response) == (status, code)
        assert await db.fetchval("select count(*) from appointments") == 0


ARGS_NOT_AN_OBJECT_IS_422_CASES = [[1, 2], "date=2026-12-02", 7, None]


async def test_args_not_an_object_is_422(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """`args` that is not an object is a malformed envelope."""
    for args in ARGS_NOT_AN_OBJECT_IS_422_CASES:
        body = envelope("check_availability", {})
        body["args"] = args
        response = await post(client, clock, "/retell/functions/check_availability", body)
        assert error_of(response) == (422, "malformed_envelope")


async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A body over 1 MiB is refused with 413 before anything is parsed."""
    body = envelope("book_appointment", {**BOOKING_ARGS, "notes": "x" * (1024 * 1024)})
    response = await post(client, clock, BOOK, body)
    assert error_of(response) == (413, "body_too_large")
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_bad_signatures_are_401_and_write_nothing(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Missing, malformed, wrong-key, stale or tampered signatures: 401 and no rows at all."""
    raw = orjson.dumps(envelope("book_appointment", BOOKING_ARGS))
    now_ms = signed_at(clock)
    tampered = signed_headers(raw, timestamp_ms=now_ms)
    headers_list = [
        {"content-type": "application/json"},
        {"content-type": "application/json", "x-retell-signature": "v=1,d=abc"},
        signed_headers(raw, key="another-key", timestamp_ms=now_ms),
        signed_headers(raw, timestamp_ms=now_ms - 6 * 60 * 1000),
        signed_headers(raw, timestamp_ms=now_ms + 6 * 60 * 1000),
    ]
    for headers in headers_list:
        response = await client.post(BOOK, content=raw, headers=headers)
        assert error_of(response) == (401, "invalid_signature")
    response = await client.post(BOOK, content=raw.replace(b"09:00", b"10:00"), headers=tampered)
    assert error_of(response) == (401, "invalid_signature")
    for table in ("appointments", "customer_call_logs"):
        assert await db.fetchval(f"select count(*) from {table}") == 0  # noqa: S608


async def test_official_retell_vector_passes_the_signature_check(
    make_app: Callable[..., Starlette], clock: Clock, db: asyncpg.Connection
) -> None:
    """Retell's published vector passes the check (then 422: no call in it); a changed one: 401."""
    clock.now = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    app = make_app(retell_api_key=SecretStr("test-api-key"))
    digest = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"
    async with app_client(app) as client:
        for d, status in ((digest, 422), (digest[:-1] + "f", 401)):
            response = await client.post(
                "/retell/functions/check_availability",
                content=b'{"event":"call_ended"}',
                headers={"x-retell-signature": f"v=1700000000000,d={d}"},
            )
            assert response.status_code == status


async def test_non_ascii_body_is_verified_over_its_raw_bytes(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A compact UTF-8 body with accents verifies, and the name is stored as spoken."""
    body = envelope("book_appointment", {**BOOKING_ARGS, "patient_name": "José Müller-Ñúñez"})
    raw = orjson.dumps(body)
    assert "é".encode() in raw
    response = await post(client, clock, BOOK, raw)
    assert response.json()["ok"] is True
    assert await db.fetchval("select patient_name from appointments") == "José Müller-Ñúñez"


async def test_blank_optional_arguments_mean_absent(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """Empty strings for optional text (as LLMs send) are treated as not given."""
    result = await call(
        client,
        clock,
        "check_availability",
        {"date": WEDNESDAY, "staff_name": "", "staff_role": "  ", "max_slots": 3},
    )
    assert result["ok"] is True
    assert len(result["slots"]) == 3


@contextlib.asynccontextmanager
async def app_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            yield c


class WireCounter:
    """A TCP proxy in front of PostgreSQL counting the frontend messages each client sends.

    Every Sync ('S') or simple Query ('Q') the service sends is one round trip to the server.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sent: Counter[str] = Counter()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        for port in range(18500, 18600):
            try:
                self.server = await asyncio.start_server(self._accept, "127.0.0.1", port)
            except OSError:
                continue
            self.port = port
            return
        raise RuntimeError("no free port in 18500-18599")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def round_trips(self) -> int:
        return self.sent["S"] + self.sent["Q"]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(
            self._frontend(reader, up_writer),
            self._copy(up_reader, writer),
            return_exceptions=True,
        )

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _frontend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # The startup packets have no type byte; an SSL or GSS request precedes the startup.
            while True:
                header = await reader.readexactly(8)
                length, code = struct.unpack("!ii", header)
                writer.write(header + await reader.readexactly(length - 8))
                if code not in (80877103, 80877104):
                    break
            while True:
                kind = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                payload = await reader.readexactly(length - 4)
                self.sent[kind.decode()] += 1
                writer.write(kind + struct.pack("!i", length) + payload)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def counter(database_url: str) -> AsyncIterator[WireCounter]:
    parts = httpx.URL(database_url)
    proxy = WireCounter((parts.host, parts.port or 5432))
    await proxy.start()
    yield proxy
    await proxy.close()


FUNCTION_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("check_availability", {"date": WEDNESDAY}),
    ("book_appointment", BOOKING_ARGS),
    ("find_appointments", {}),
    ("reschedule_appointment", {"date": WEDNESDAY, "new_date": WEDNESDAY, "new_time": "09:30"}),
    ("cancel_appointment", {"date": WEDNESDAY}),
    ("leave_voicemail", {"message": "Please call me back."}),
    ("forward_call", {"reason": "billing"}),
]


async def test_each_function_call_is_one_round_trip(
    make_app: Callable[..., Starlette],
    clock: Clock,
    counter: WireCounter,
    database_url: str,
    clinic: Clinic,
) -> None:
    """After a warm-up, every function call sends exactly one statement: no reset, no extras."""
    proxied = httpx.URL(database_url).copy_with(
        host="127.0.0.1", port=counter.port, query=b"sslmode=disable"
    )
    app = make_app(database_url=str(proxied), pool_min_size=1, pool_max_size=1)
    async with app_client(app) as client:
        for name, args in FUNCTION_CALLS:
            # Warm-up: the first call of each statement on a connection also prepares it.
            await call(client, clock, name, args, call_id=f"warm_{name}")
            before = counter.round_trips()
            sent_before = counter.sent.copy()
            result = await call(client, clock, name, args, call_id=f"measured_{name}")
            assert "ok" in result
            assert counter.round_trips() - before == 1, (name, counter.sent - sent_before)
            assert (counter.sent - sent_before)["Q"] == 0, name


async def test_canonical_log_line_carries_the_call(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """One request log line per call with call_id, agent_id, function, ok and latency."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        await call(client, clock, "check_availability", {"date": WEDNESDAY}, call_id="call_log_1")
        await call(client, clock, "check_availability", {"date": "Friday"}, call_id="call_log_2")
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 2
    for line, call_id, ok in zip(lines, ("call_log_1", "call_log_2"), (True, False), strict=True):
        assert line["call_id"] == call_id
        assert line["agent_id"] == clinic.agent_id
        assert line["function"] == "check_availability"
        assert line["ok"] is ok
        assert line["status"] == 200
        assert isinstance(line["latency_ms"], float)
    assert all("+1617" not in str(entry) for entry in logs)


RESULTS_STAY_SMALL_AND_SPEAKABLE_CASES = FUNCTION_CALLS


async def test_results_stay_small_and_speakable(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """With the defaults every result stays near 2 KB and its message is a sentence or two."""
    for n in range(4):
        await call(
            client,
            clock,
            "book_appointment",
            {**BOOKING_ARGS, "time": f"1{n}:00", "staff_name": "Lee"},
            call_id=f"setup_{n}",
        )
    for name, args in RESULTS_STAY_SMALL_AND_SPEAKABLE_CASES:
        response = await post_signed(
            client,
            f"/retell/functions/{name}",
            envelope(name, args),
            timestamp_ms=signed_at(clock),
        )
        assert response.status_code == 200, name
        # Each slot of the contract's shape is about 165 bytes, so the default twelve come to
        # about 2.1 KB: "2 KB typical", not strictly under it.
        assert len(response.content) < 2300, response.text
        message = response.json()["message"]
        assert 10 < len(message) < 400
        for wire in ("T09", "-05:00", "_", "{"):
            assert wire not in message


def test_spoken_forms() -> None:
    """Times, dates and lists read naturally aloud."""
    from service.speech import spoken_date, spoken_list, spoken_time

    assert [spoken_time(t) for t in ("00:05", "09:00", "12:00", "12:30", "17:45")] == [
        "12:05 AM",
        "9:00 AM",
        "12:00 PM",
        "12:30 PM",
        "5:45 PM",
    ]
    assert spoken_date("2026-12-02") == "Wednesday, December 2"
    assert spoken_list(["a", "b", "c"]) == "a, b or c"
    assert spoken_list(["a", "b"], "and") == "a and b"

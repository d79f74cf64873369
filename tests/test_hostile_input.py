"""Hostile input: fuzzed signed bodies to every endpoint, signatures, limits and awkward text."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import load_fixture, post_signed, signed_headers
from tests.factories import Clinic, add_appointment

FUNCTIONS = (
    "check_availability",
    "book_appointment",
    "find_appointments",
    "cancel_appointment",
    "reschedule_appointment",
    "leave_voicemail",
    "forward_call",
)
# Examples per endpoint: 9 endpoints, ~3,300 signed bodies per run.
EXAMPLES = {"webhook": 500, "inbound": 300} | {name: 360 for name in FUNCTIONS}
CALLER = "+16175550187"
CALL_EVENTS = ("call_started", "call_ended", "call_analyzed")

HOSTILE_STRINGS = (
    "Robert'); drop table appointments; --",
    "' or '1'='1",
    "1; select pg_sleep(30); --",
    "$1",
    "%s%s%n",
    "{{agent_id}}",
    "\\x00",
    "a\u0000b",
    "😀🦷👩‍⚕️",
    "مرحبا بالعالم",
    "\u202eevil\u202c",
    "\ufeff\u200b",
    "x" * 10_000,
    "",
    "   ",
    "<script>alert(1)</script>",
    "${jndi:ldap://example.invalid/a}",
    "2026-02-30",
    "25:61",
    "-1",
    "NaN",
    "null",
    "00000000-0000-0000-0000-000000000000",
    "agent_someone_else",
)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_STRINGS),
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=10,
)


def next_weekday(weekday: int = 2, weeks_ahead: int = 2) -> date:
    day = date.today() + timedelta(weeks=weeks_ahead)
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def call_object(clinic: Clinic, call_id: str = "call_fuzz") -> dict[str, Any]:
    return {
        "call_id": call_id,
        "agent_id": clinic.agent_id,
        "call_type": "phone_call",
        "call_status": "ongoing",
        "direction": "inbound",
        "from_number": CALLER,
        "to_number": "+16175550100",
        "start_timestamp": 1795532712345,
    }


def function_args(clinic: Clinic, name: str, appointment_id: str) -> dict[str, Any]:
    """Every argument each function defines, with a value it accepts."""
    day = next_weekday().isoformat()
    lee = str(clinic.staff["Dr. Ada Lee"])
    caller = {"patient_phone": CALLER, "patient_name": "Maria Gonzalez"}
    return {
        "check_availability": {
            "date": day,
            "days": 3,
            "staff_name": "Dr. Lee",
            "staff_member_id": lee,
            "staff_role": "dentist",
            "time_preference": "morning",
            "duration_minutes": 30,
            "max_slots": 5,
        },
        "book_appointment": {
            **caller,
            "date": day,
            "time": "10:00",
            "patient_email": "maria@example.com",
            "staff_name": "Dr. Lee",
            "staff_member_id": lee,
            "staff_role": "dentist",
            "appointment_type": "cleaning",
            "duration_minutes": 30,
            "notes": "First visit.",
            "special_requests": "Wheelchair access.",
        },
        "find_appointments": caller,
        "cancel_appointment": {
            **caller,
            "appointment_id": appointment_id,
            "date": day,
            "time": "11:00",
        },
        "reschedule_appointment": {
            **caller,
            "appointment_id": appointment_id,
            "date": day,
            "time": "11:00",
            "new_date": day,
            "new_time": "14:00",
            "staff_name": "Dr. Lee",
            "staff_member_id": lee,
        },
        "leave_voicemail": {
            "message": "Please call me back about my crown.",
            "caller_name": "Maria Gonzalez",
            "caller_phone": CALLER,
            "caller_email": "maria@example.com",
            "subject": "Crown",
            "message_type": "callback_request",
            "priority": "high",
            "urgent": False,
        },
        "forward_call": {"reason": "billing question", "caller_name": "Maria Gonzalez"},
    }[name]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return body


def _delete(body: Any, path: tuple[Any, ...]) -> Any:
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return body


def mutate(draw: Callable[..., Any], seed: dict[str, Any]) -> bytes:
    """One mutation of a valid body: a value replaced, a key dropped or added, or bytes garbled."""
    body: Any = orjson.loads(orjson.dumps(seed))
    paths = _paths(body)
    operation = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "bytes"]))
    if operation == "replace":
        body = _set(body, draw(st.sampled_from(paths)), draw(json_values))
    elif operation == "delete" and len(paths) > 1:
        body = _delete(body, draw(st.sampled_from(paths[1:])))
    elif operation == "add":
        containers = [p for p in paths if isinstance(_get(body, p), dict)]
        path = draw(st.sampled_from(containers))
        key = draw(
            st.text(max_size=12) | st.sampled_from(sorted({k for p in paths for k in p}, key=str))
        )
        _get(body, path)[str(key)] = draw(json_values)
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    if operation == "bytes" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at + draw(st.integers(0, 4)) :]
    return raw


def _get(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


COUNTS_SQL = """
select (select count(*) from appointments), (select count(*) from voicemails),
       (select count(*) from customer_call_logs),
       (select count(*) from appointments where status = 'cancelled')
"""


async def row_counts(db: asyncpg.Connection) -> tuple[int, ...]:
    row = await db.fetchrow(COUNTS_SQL)
    assert row is not None
    return tuple(row)


def assert_clean_answer(response: httpx.Response) -> None:
    """No 5xx, no traceback, and every answer but a 204 is a JSON object of the right shape."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    if response.status_code == 204:
        assert response.content == b""
        return
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code >= 400:
        assert isinstance(body["error"], str)
        assert isinstance(body["message"], str)


def fuzz_settings(examples: int) -> settings:
    # Fixtures (client, clinic, rows) are shared by every example of a test on purpose: the
    # row counts are compared around each request.
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture
async def appointment_id(db: asyncpg.Connection, clinic: Clinic) -> str:
    """Maria Gonzalez's upcoming appointment with Dr. Lee, booked under the caller's number."""
    found = await add_appointment(
        db, clinic.staff["Dr. Ada Lee"], next_weekday(), time_of(11), phone=CALLER
    )
    return str(found)


def time_of(hour: int) -> Any:
    from datetime import time as clock_time

    return clock_time(hour)


def _fuzz_function(name: str) -> Any:
    @fuzz_settings(EXAMPLES[name])
    @given(data=st.data())
    async def test(
        client: httpx.AsyncClient,
        db: asyncpg.Connection,
        clinic: Clinic,
        appointment_id: str,
        data: st.DataObject,
    ) -> None:
        seed = {
            "name": name,
            "call": call_object(clinic),
            "args": function_args(clinic, name, appointment_id),
        }
        raw = mutate(data.draw, seed)
        before = await row_counts(db)
        response = await post_signed(client, f"/retell/functions/{name}", raw)
        assert_clean_answer(response)
        if response.status_code >= 400 or response.json().get("ok") is False:
            assert await row_counts(db) == before, response.text

    test.__doc__ = (
        f"Mutated signed bodies to {name} get a clean 2xx/4xx answer; a refused one writes nothing."
    )
    return test


test_fuzzed_check_availability = _fuzz_function("check_availability")
test_fuzzed_book_appointment = _fuzz_function("book_appointment")
test_fuzzed_find_appointments = _fuzz_function("find_appointments")
test_fuzzed_cancel_appointment = _fuzz_function("cancel_appointment")
test_fuzzed_reschedule_appointment = _fuzz_function("reschedule_appointment")
test_fuzzed_leave_voicemail = _fuzz_function("leave_voicemail")
test_fuzzed_forward_call = _fuzz_function("forward_call")


@fuzz_settings(EXAMPLES["webhook"])
@given(data=st.data())
async def test_fuzzed_call_webhooks_never_fail_or_write_when_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, data: st.DataObject
) -> None:
    """Mutated signed call events get 204 or a clean 4xx; a refused event stores nothing."""
    seed = load_fixture(f"webhook_{data.draw(st.sampled_from(CALL_EVENTS))}.json")
    seed["call"]["agent_id"] = clinic.agent_id
    raw = mutate(data.draw, seed)
    before = await row_counts(db)
    response = await post_signed(client, "/retell/webhook", raw)
    assert_clean_answer(response)
    assert response.status_code in (204, 400, 413, 422), response.text
    if response.status_code >= 400:
        assert await row_counts(db) == before, response.text


@fuzz_settings(EXAMPLES["inbound"])
@given(data=st.data())
async def test_fuzzed_inbound_webhooks_answer_strings_and_write_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, data: st.DataObject
) -> None:
    """Mutated signed inbound webhooks get a clean answer of string variables and write nothing."""
    seed = load_fixture("webhook_call_inbound.json")
    seed["call_inbound"]["agent_id"] = clinic.agent_id
    raw = mutate(data.draw, seed)
    before = await row_counts(db)
    response = await post_signed(client, "/retell/inbound", raw)
    assert_clean_answer(response)
    if response.status_code == 200:
        variables = response.json()["call_inbound"].get("dynamic_variables", {})
        assert all(isinstance(v, str) for v in variables.values())
    assert await row_counts(db) == before


# --- Signature ------------------------------------------------------------------------------


def booking(clinic: Clinic, call_id: str = "call_sig", at: str = "10:00") -> dict[str, Any]:
    return {
        "name": "book_appointment",
        "call": call_object(clinic, call_id),
        "args": {"patient_name": "Maria Gonzalez", "date": next_weekday().isoformat(), "time": at},
    }


@pytest.mark.parametrize("age_seconds", [301, 3600, -301])
async def test_replayed_or_future_signature_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, age_seconds: int
) -> None:
    """A correctly signed body whose timestamp is over 5 minutes off is 401 and books nothing."""
    stamp = int((time.time() - age_seconds) * 1000)
    response = await post_signed(
        client, "/retell/functions/book_appointment", booking(clinic), timestamp_ms=stamp
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_signature_of_one_body_does_not_pass_another(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A valid signature for one body, sent with a different body, is 401 and writes nothing."""
    signed = orjson.dumps(booking(clinic, at="10:00"))
    other = orjson.dumps(booking(clinic, at="14:00"))
    headers = signed_headers(signed)
    for path in ("/retell/functions/book_appointment", "/retell/webhook", "/retell/inbound"):
        response = await client.post(path, content=other, headers=headers)
        assert response.status_code == 401, path
    # The untouched pair still passes: the refusal is about the body, not the header.
    accepted = await client.post(
        "/retell/functions/book_appointment", content=signed, headers=headers
    )
    assert accepted.json()["booked"] is True
    assert await db.fetchval("select count(*) from appointments") == 1


@pytest.mark.parametrize(
    "header",
    [None, "", "v=123", "d=" + "0" * 64, "v=abc,d=" + "0" * 64, "v=1,d=" + "0" * 63, "garbage"],
)
async def test_missing_or_malformed_signature_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, header: str | None
) -> None:
    """A missing or malformed X-Retell-Signature is 401 with a JSON error, and nothing is written."""
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["x-retell-signature"] = header
    response = await client.post(
        "/retell/functions/book_appointment", content=orjson.dumps(booking(clinic)), headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_signature_digest_is_compared_in_constant_time(
    client: httpx.AsyncClient, clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest check goes through hmac.compare_digest, for good and for bad signatures."""
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("service.retell.hmac.compare_digest", recording)
    body = orjson.dumps(booking(clinic))
    good = signed_headers(body)
    bad = {**good, "x-retell-signature": good["x-retell-signature"][:-4] + "0000"}
    assert (
        await client.post("/retell/functions/check_availability", content=body, headers=bad)
    ).status_code == 401
    assert (
        await client.post("/retell/functions/find_appointments", content=body, headers=good)
    ).status_code == 200
    assert len(calls) == 2
    assert calls[1][0] == calls[1][1]
    assert calls[0][0] != calls[0][1]


# --- Limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/retell/functions/book_appointment", 1024 * 1024),
        ("/retell/inbound", 1024 * 1024),
        ("/retell/webhook", 16 * 1024 * 1024),
    ],
)
async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, path: str, limit: int
) -> None:
    """A signed body one byte over the endpoint's limit is 413 with a JSON error; none written."""
    body = booking(clinic)
    body["padding"] = ""
    size = len(orjson.dumps(body))
    body["padding"] = "x" * (limit + 1 - size)
    raw = orjson.dumps(body)
    assert len(raw) == limit + 1
    response = await post_signed(client, path, raw)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert await row_counts(db) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patient_name", "A" * 10_000),
        ("notes", "n" * 10_000),
        ("special_requests", "s" * 10_000),
        ("appointment_type", "t" * 10_000),
        ("patient_email", "e" * 10_000 + "@example.com"),
        ("patient_phone", "6" * 10_000),
        ("staff_name", "Dr. " + "L" * 10_000),
    ],
)
async def test_oversized_argument_strings_are_refused_without_a_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, field: str, value: str
) -> None:
    """A 10 KB argument string is a spoken refusal (ok false), not an error, and books nothing."""
    body = booking(clinic)
    body["args"][field] = value
    response = await post_signed(client, "/retell/functions/book_appointment", body)
    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert response.json()["message"]
    assert await db.fetchval("select count(*) from appointments") == 0


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        ({"days": 0}, False),
        ({"days": 32}, False),
        ({"days": -5}, False),
        ({"days": 10**30}, False),
        ({"days": 31}, True),
        ({"max_slots": 0}, False),
        ({"max_slots": 101}, False),
        ({"max_slots": 100, "days": 7}, True),
        ({"max_slots": 1}, True),
        ({"days": "many"}, False),
    ],
)
async def test_days_and_max_slots_bounds(
    client: httpx.AsyncClient, clinic: Clinic, args: dict[str, Any], ok: bool
) -> None:
    """days outside 1-31 and max_slots outside 1-100 are refusals; the bounds themselves work."""
    body = {
        "name": "check_availability",
        "call": call_object(clinic),
        "args": {"date": next_weekday().isoformat(), **args},
    }
    # The standard library writes integers of any size, as a hostile client might.
    raw = json.dumps(body).encode()
    response = await post_signed(client, "/retell/functions/check_availability", raw)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is ok, result
    if ok:
        assert 1 <= len(result["slots"]) <= args.get("max_slots", 12)
        if args.get("max_slots") == 100:
            assert len(result["slots"]) == 100


AWKWARD_TEXT = (
    "Robert'); drop table appointments; -- 😀 مرحبا \u202eevil\u202c $1 %s {{x}} "
    "<b>\\'\"</b> \ufeff"
)


async def test_injection_and_unicode_text_is_stored_verbatim(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """SQL injection strings, emoji and right-to-left text land in every text column as sent."""
    body = booking(clinic)
    for field in ("notes", "special_requests", "appointment_type"):
        body["args"][field] = f"{field}: {AWKWARD_TEXT}"
    body["args"]["patient_name"] = "Zoë O'Brien-Nuñez 😀"
    response = await post_signed(client, "/retell/functions/book_appointment", body)
    assert response.json()["booked"] is True, response.text
    row = await db.fetchrow(
        "select patient_name, notes, special_requests, appointment_type from appointments"
    )
    assert row is not None
    assert row["patient_name"] == "Zoë O'Brien-Nuñez 😀"
    for field in ("notes", "special_requests", "appointment_type"):
        assert row[field] == f"{field}: {AWKWARD_TEXT}"

    message = {
        "name": "leave_voicemail",
        "call": call_object(clinic, "call_awkward_vm"),
        "args": {
            "message": f"message: {AWKWARD_TEXT}",
            "subject": f"subject: {AWKWARD_TEXT}",
            "caller_name": "Zoë O'Brien-Nuñez 😀",
        },
    }
    response = await post_signed(client, "/retell/functions/leave_voicemail", message)
    assert response.json()["saved"] is True, response.text
    voicemail = await db.fetchrow("select transcript, subject, caller_name from voicemails")
    assert voicemail is not None
    assert voicemail["transcript"] == f"message: {AWKWARD_TEXT}"
    assert voicemail["subject"] == f"subject: {AWKWARD_TEXT}"
    assert voicemail["caller_name"] == "Zoë O'Brien-Nuñez 😀"
    # The tables are all still there and whole.
    assert await db.fetchval("select count(*) from staff_members") == 3


async def test_awkward_text_in_call_events_is_stored_verbatim(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A transcript and summary full of injection strings and unicode are stored as sent."""
    ended = load_fixture("webhook_call_ended.json")
    ended["call"]["transcript"] = f"Agent: hello\nUser: {AWKWARD_TEXT}"
    ended["call"]["disconnection_reason"] = AWKWARD_TEXT
    response = await post_signed(client, "/retell/webhook", ended)
    assert response.status_code == 204, response.text
    row = await db.fetchrow("select transcript, disconnection_reason from customer_call_logs")
    assert row is not None
    assert row["transcript"] == f"Agent: hello\nUser: {AWKWARD_TEXT}"
    assert row["disconnection_reason"] == AWKWARD_TEXT


@pytest.mark.parametrize(
    ("path", "build"),
    [
        ("/retell/functions/book_appointment", "booking_notes"),
        ("/retell/functions/book_appointment", "booking_name"),
        ("/retell/functions/leave_voicemail", "voicemail"),
        ("/retell/functions/check_availability", "call_id"),
        ("/retell/webhook", "transcript"),
        ("/retell/inbound", "inbound"),
    ],
)
async def test_nul_character_is_refused_cleanly(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, path: str, build: str
) -> None:
    """A NUL character (PostgreSQL text can't hold it) anywhere is a clean 4xx, and nothing is stored."""
    body: dict[str, Any]
    if build == "booking_notes":
        body = booking(clinic)
        body["args"]["notes"] = "before\u0000after"
    elif build == "booking_name":
        body = booking(clinic)
        body["args"]["patient_name"] = "Maria\u0000"
    elif build == "voicemail":
        body = {
            "name": "leave_voicemail",
            "call": call_object(clinic),
            "args": {"message": "call me\u0000back"},
        }
    elif build == "call_id":
        body = booking(clinic, call_id="call_\u0000")
        body["name"] = "check_availability"
    elif build == "transcript":
        body = load_fixture("webhook_call_ended.json")
        body["call"]["transcript"] = "User: hi\u0000"
    else:
        body = load_fixture("webhook_call_inbound.json")
        body["call_inbound"]["from_number"] = "+1617555\u00000187"
    response = await post_signed(client, path, body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"] == "unstorable_text"
    assert await row_counts(db) == (0, 0, 0, 0)

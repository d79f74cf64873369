"""Hostile input: fuzzed signed bodies to every endpoint, signatures, limits and awkward text."""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import functions
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
# Examples per endpoint: 4,110 signed bodies per run of the suite (about a minute);
# FUZZ_SCALE=N runs N/3 times as many (the figures in README's Reliability section).
_SCALE = int(os.environ.get("FUZZ_SCALE", "3"))
EXAMPLES = {
    "webhook": 120 * _SCALE,
    "inbound": 200 * _SCALE,
    **{name: 150 * _SCALE for name in FUNCTIONS},
}
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

# Numbers past what a column or a timestamp holds: Retell's epoch milliseconds, bigint, int.
HOSTILE_NUMBERS = (10**17, -(10**16), 2**63, -(2**63) - 1, 2**31, 253_402_300_800_000)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HOSTILE_NUMBERS),
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
    table: dict[str, dict[str, Any]] = {
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
    }
    return table[name]


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
            st.text(max_size=12)
            | st.sampled_from(sorted({k for p in paths for k in p if isinstance(k, str)}))
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
        # A call id of its own: the paths that create the call's row run for every example.
        seed = {
            "name": name,
            "call": call_object(clinic, f"call_fuzz_{uuid.uuid4().hex}"),
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
    # Some examples start a new call's row, the others add to one already stored.
    seed["call"]["call_id"] = data.draw(
        st.sampled_from(["call_fuzz_shared", f"call_fuzz_{uuid.uuid4().hex}"])
    )
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


async def test_replayed_or_future_signature_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A correctly signed body whose timestamp is over 5 minutes off is 401 and stores nothing."""
    ended = load_fixture("webhook_call_ended.json")
    for age_seconds in (301, 3600, -301):
        stamp = int((time.time() - age_seconds) * 1000)
        for path, body in (
            ("/retell/functions/book_appointment", booking(clinic)),
            ("/retell/webhook", ended),
        ):
            response = await post_signed(client, path, body, timestamp_ms=stamp)
            assert response.status_code == 401, (path, age_seconds)
            assert response.json()["error"] == "invalid_signature"
    assert await row_counts(db) == (0, 0, 0, 0)
    # The same bodies signed just now are accepted: only the age made the difference.
    fresh = await post_signed(client, "/retell/functions/book_appointment", booking(clinic))
    assert fresh.json()["booked"] is True


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


MALFORMED_SIGNATURES = (
    None,
    "",
    "v=123",
    "d=" + "0" * 64,
    "v=abc,d=" + "0" * 64,
    "v=1,d=" + "0" * 63,
    "garbage",
)


async def test_missing_or_malformed_signature_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A missing or malformed X-Retell-Signature is 401 with a JSON error; nothing is written."""
    for header in MALFORMED_SIGNATURES:
        headers = {"content-type": "application/json"}
        if header is not None:
            headers["x-retell-signature"] = header
        for path in ("/retell/functions/book_appointment", "/retell/webhook", "/retell/inbound"):
            response = await client.post(
                path, content=orjson.dumps(booking(clinic)), headers=headers
            )
            assert response.status_code == 401, (path, header)
            assert response.json()["error"] == "invalid_signature"
    assert await row_counts(db) == (0, 0, 0, 0)


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


# --- Values past what the database holds ------------------------------------------------------


@pytest.mark.parametrize("stamp", [10**17, -(10**16), 2**63])
@pytest.mark.parametrize("name", ["forward_call", "leave_voicemail", "book_appointment"])
async def test_call_start_past_any_date_is_refused_at_the_edge(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, name: str, stamp: int
) -> None:
    """A `start_timestamp` no date can hold, on a new call, is a 422 and creates no call row."""
    call = {**call_object(clinic, f"call_stamp_{uuid.uuid4().hex}"), "start_timestamp": stamp}
    args = function_args(clinic, name, str(uuid.uuid4()))
    response = await post_signed(
        client, f"/retell/functions/{name}", {"name": name, "call": call, "args": args}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "malformed_envelope"
    assert await row_counts(db) == (0, 0, 0, 0)


@pytest.mark.parametrize("name", ["forward_call", "leave_voicemail", "book_appointment"])
async def test_call_id_too_long_to_index_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, name: str
) -> None:
    """A 3,000-character `call_id` (past the unique index's limit) is a 422 writing nothing."""
    call = call_object(clinic, "call_" + "x" * 3000)
    args = function_args(clinic, name, str(uuid.uuid4()))
    response = await post_signed(
        client, f"/retell/functions/{name}", {"name": name, "call": call, "args": args}
    )
    assert response.status_code == 422, response.text
    assert await row_counts(db) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"call_id": "call_" + "x" * 3000},
        {"start_timestamp": 10**17},
        {"end_timestamp": -(10**16)},
    ],
)
async def test_call_event_past_what_columns_hold_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, change: dict[str, Any]
) -> None:
    """A call event whose id or times no column can hold is a JSON 400 and stores nothing."""
    event = load_fixture("webhook_call_ended.json")
    event["call"].update({"agent_id": clinic.agent_id, **change})
    response = await post_signed(client, "/retell/webhook", event)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_event"
    assert await row_counts(db) == (0, 0, 0, 0)


@pytest.fixture
async def failing_function(
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """forward_call's database function swapped for one whose statement raises what asks."""
    await db.execute(
        """
        create or replace function test_refuses_value(
          agent text, call jsonb, args jsonb, now timestamptz, notice integer
        ) returns jsonb language plpgsql as $$
        begin
          if args ->> 'reason' = 'overflow' then
            return jsonb_build_object('n', (args ->> 'caller_name')::integer);
          end if;
          raise program_limit_exceeded using message = 'index row size exceeds maximum';
        end $$
        """
    )
    function = functions.FUNCTIONS["forward_call"]
    monkeypatch.setitem(
        functions.FUNCTIONS,
        "forward_call",
        dataclasses.replace(
            function, sql="select test_refuses_value($1, $2::jsonb, $3::jsonb, $4, $5)"
        ),
    )
    yield "forward_call"
    await db.execute("drop function test_refuses_value")


@pytest.mark.parametrize("reason", ["overflow", "limit"])
async def test_database_data_error_is_a_client_answer(
    client: httpx.AsyncClient, clinic: Clinic, failing_function: str, reason: str
) -> None:
    """A value PostgreSQL refuses past the edge's bounds (an integer overflow, a program limit)
    is a JSON 422, never a 500."""
    body = {
        "name": failing_function,
        "call": call_object(clinic),
        "args": {"reason": reason, "caller_name": "99999999999"},
    }
    response = await post_signed(client, f"/retell/functions/{failing_function}", body)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "unstorable_value",
        "message": "The request holds a value the database cannot store.",
    }


# --- Limits ---------------------------------------------------------------------------------


LIMITS = (
    ("/retell/functions/book_appointment", 1024 * 1024),
    ("/retell/inbound", 1024 * 1024),
    ("/retell/webhook", 16 * 1024 * 1024),
)


async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A signed body one byte over the endpoint's limit is 413 with a JSON error; none written."""
    for path, limit in LIMITS:
        body = booking(clinic)
        body["padding"] = ""
        size = len(orjson.dumps(body))
        body["padding"] = "x" * (limit + 1 - size)
        raw = orjson.dumps(body)
        assert len(raw) == limit + 1
        response = await post_signed(client, path, raw)
        assert response.status_code == 413, path
        assert response.json()["error"] == "body_too_large"
    assert await row_counts(db) == (0, 0, 0, 0)


OVERSIZED = {
    "patient_name": "A" * 10_000,
    "notes": "n" * 10_000,
    "special_requests": "s" * 10_000,
    "appointment_type": "t" * 10_000,
    "patient_email": "e" * 10_000 + "@example.com",
    "patient_phone": "6" * 10_000,
    "staff_name": "Dr. " + "L" * 10_000,
}


async def test_oversized_argument_strings_are_refused_without_a_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A 10 KB argument string is a spoken refusal (ok false), not an error, and books nothing."""
    for field, value in OVERSIZED.items():
        body = booking(clinic)
        body["args"][field] = value
        response = await post_signed(client, "/retell/functions/book_appointment", body)
        assert response.status_code == 200, field
        assert response.json()["ok"] is False, field
        assert response.json()["message"]
    voicemail = {
        "name": "leave_voicemail",
        "call": call_object(clinic),
        "args": {"message": "m" * 10_000},
    }
    response = await post_signed(client, "/retell/functions/leave_voicemail", voicemail)
    assert response.json()["ok"] is False
    assert await row_counts(db) == (0, 0, 0, 0)


BOUNDS: list[tuple[dict[str, Any], bool]] = [
    ({"days": 0}, False),
    ({"days": 32}, False),
    ({"days": -5}, False),
    ({"days": 10**30}, False),
    ({"days": 2.5}, False),
    ({"days": "many"}, False),
    ({"days": 31}, True),
    ({"max_slots": 0}, False),
    ({"max_slots": 101}, False),
    ({"max_slots": -(2**70)}, False),
    ({"max_slots": 100, "days": 7}, True),
    ({"max_slots": 1}, True),
]


async def test_days_and_max_slots_bounds(client: httpx.AsyncClient, clinic: Clinic) -> None:
    """days outside 1-31 and max_slots outside 1-100 are refusals; the bounds themselves work."""
    for args, ok in BOUNDS:
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
        assert result["ok"] is ok, (args, result)
        if ok:
            expected = args.get("max_slots", 12)
            assert len(result["slots"]) == expected, args


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


def nul_bodies(clinic: Clinic) -> list[tuple[str, dict[str, Any]]]:
    """A NUL character in a text field of every kind of request."""
    notes = booking(clinic)
    notes["args"]["notes"] = "before\u0000after"
    name = booking(clinic)
    name["args"]["patient_name"] = "Maria\u0000"
    call_id = booking(clinic, call_id="call_\u0000")
    key = booking(clinic)
    key["args"]["unknown\u0000key"] = 1
    voicemail = {
        "name": "leave_voicemail",
        "call": call_object(clinic),
        "args": {"message": "call me\u0000back"},
    }
    ended = load_fixture("webhook_call_ended.json")
    ended["call"]["transcript"] = "User: hi\u0000"
    inbound = load_fixture("webhook_call_inbound.json")
    inbound["call_inbound"]["from_number"] = "+1617555\u00000187"
    return [
        ("/retell/functions/book_appointment", notes),
        ("/retell/functions/book_appointment", name),
        ("/retell/functions/check_availability", call_id),
        ("/retell/functions/book_appointment", key),
        ("/retell/functions/leave_voicemail", voicemail),
        ("/retell/webhook", ended),
        ("/retell/inbound", inbound),
    ]


async def test_nul_character_is_refused_cleanly(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A NUL character (PostgreSQL text can't hold it) anywhere is a clean 400; nothing stored."""
    for path, body in nul_bodies(clinic):
        response = await post_signed(client, path, body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "unstorable_text"
    assert await row_counts(db) == (0, 0, 0, 0)

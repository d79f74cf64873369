"""POST /retell/webhook: call events stored in one customer_call_logs row per call, whatever
the order, duplication or concurrency of their arrival."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from tests.conftest import load_fixture, post_signed, signed_headers
from tests.factories import Clinic, add_appointment
from tests.test_faults import next_weekday

# A Wednesday two weeks from today: bookable on any day the suite runs.
DAY = next_weekday().isoformat()

CALL_ID = "call_5b0e8c2f71d94a6e93c4a1f7d28"
EVENTS = ("call_started", "call_ended", "call_analyzed")

# Every column the webhook fills, for comparing whole rows.
ROW_SQL = """
select retell_call_id, agent_configuration_id, user_id, agent_id, call_type, direction,
       from_number, to_number, call_status, started_at, ended_at, duration_ms,
       disconnection_reason, transcript, transcript_object, recording_url, public_log_url,
       call_summary, user_sentiment, call_successful, in_voicemail, custom_analysis_data,
       call_cost, metadata, events
from customer_call_logs where retell_call_id = $1
"""


def event(name: str, call_id: str = CALL_ID, **changes: Any) -> dict[str, Any]:
    """The fixture body of one event, for another call id or with call fields changed."""
    body = copy.deepcopy(load_fixture(f"webhook_{name}.json"))
    body["call"]["call_id"] = call_id
    body["call"].update(changes)
    return body


async def row(db: asyncpg.Connection, call_id: str = CALL_ID) -> dict[str, Any] | None:
    record = await db.fetchrow(ROW_SQL, call_id)
    return dict(record) if record else None


async def send(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await post_signed(client, "/retell/webhook", body)


async def test_call_started_stores_the_call(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """call_started creates the row with the clinic, the numbers, the start and status ongoing."""
    response = await send(client, event("call_started"))
    assert response.status_code == 204, response.text
    assert response.content == b""
    stored = await row(db)
    assert stored is not None
    assert stored["agent_configuration_id"] == clinic.configuration_id
    assert stored["user_id"] == clinic.user_id
    assert stored["agent_id"] == clinic.agent_id
    assert stored["call_type"] == "phone_call"
    assert stored["direction"] == "inbound"
    assert stored["from_number"] == "+16175550187"
    assert stored["to_number"] == "+16175550100"
    assert stored["call_status"] == "ongoing"
    assert stored["started_at"] == datetime.fromtimestamp(1795532712.345, UTC)
    assert stored["ended_at"] is None
    assert stored["metadata"] == {
        "clinic_id": "brightside-back-bay",
        "patient_id": "pt_10482",
        "source": "inbound_webhook",
    }
    assert list(stored["events"]) == ["call_started"]
    assert stored["events"]["call_started"] == event("call_started")


async def test_call_ended_stores_the_end_and_transcript(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """call_ended adds the end, duration, reason, transcript, recording and cost."""
    ended = event("call_ended")
    assert (await send(client, ended)).status_code == 204
    stored = await row(db)
    assert stored is not None
    assert stored["call_status"] == "ended"
    assert stored["ended_at"] == datetime.fromtimestamp(1795532768.165, UTC)
    assert stored["duration_ms"] == 55820
    assert stored["disconnection_reason"] == "agent_hangup"
    assert stored["transcript"] == ended["call"]["transcript"]
    assert stored["transcript_object"] == ended["call"]["transcript_object"]
    assert stored["recording_url"] == ended["call"]["recording_url"]
    assert stored["public_log_url"] == ended["call"]["public_log_url"]
    assert stored["call_cost"]["combined_cost"] == 12.1333
    assert stored["call_summary"] is None
    assert stored["events"] == {"call_ended": ended}


async def test_call_analyzed_stores_the_analysis(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """call_analyzed adds summary, sentiment, success, voicemail flag and custom data."""
    assert (await send(client, event("call_analyzed"))).status_code == 204
    stored = await row(db)
    assert stored is not None
    assert stored["call_summary"].startswith("Existing patient Maria Gonzalez called")
    assert stored["user_sentiment"] == "Positive"
    assert stored["call_successful"] is True
    assert stored["in_voicemail"] is False
    assert stored["custom_analysis_data"]["caller_intent"] == "book_appointment"
    assert stored["duration_ms"] == 55820


async def ordered_row(client: httpx.AsyncClient, db: asyncpg.Connection) -> dict[str, Any]:
    for name in EVENTS:
        assert (await send(client, event(name))).status_code == 204
    stored = await row(db)
    assert stored is not None
    return stored


async def test_any_order_with_duplicates_concurrently_gives_the_ordered_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Every permutation of the three events, each sent twice and all at once, stores the row
    that one ordered delivery stores."""
    expected = await ordered_row(client, db)
    for number, order in enumerate(itertools.permutations(EVENTS)):
        call_id = f"call_perm_{number}"
        bodies = [event(name, call_id) for name in order]
        responses = await asyncio.gather(*(send(client, b) for b in bodies + bodies[::-1]))
        assert [r.status_code for r in responses] == [204] * 6, order
        stored = await row(db, call_id)
        assert stored is not None
        for body in stored["events"].values():
            body["call"]["call_id"] = CALL_ID
        assert {**stored, "retell_call_id": CALL_ID} == expected, order
    count = await db.fetchval("select count(*) from customer_call_logs")
    assert count == 7


async def test_late_call_started_does_not_reopen_an_ended_call(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call_started after call_analyzed keeps status ended and every field already stored."""
    await send(client, event("call_ended"))
    await send(client, event("call_analyzed"))
    before = await row(db)
    assert (await send(client, event("call_started"))).status_code == 204
    after = await row(db)
    assert before is not None
    assert after is not None
    assert after["call_status"] == "ended"
    assert after["ended_at"] == before["ended_at"]
    assert after["call_summary"] == before["call_summary"]
    assert set(after["events"]) == set(EVENTS)


async def test_call_analyzed_before_call_ended_loses_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call_ended without analysis arriving after call_analyzed keeps the analysis."""
    await send(client, event("call_analyzed"))
    await send(client, event("call_ended"))
    stored = await row(db)
    assert stored is not None
    assert stored["user_sentiment"] == "Positive"
    assert stored["custom_analysis_data"] is not None
    assert stored["transcript"] is not None


async def test_status_moves_forward_only(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call_ended saying ongoing (a stale copy) does not move a row back from ended."""
    await send(client, event("call_ended"))
    await send(client, event("call_analyzed", call_status="registered"))
    stored = await row(db)
    assert stored is not None
    assert stored["call_status"] == "ended"


async def test_statuses_unknown_to_us_settle_the_same_in_any_order(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Two statuses we don't rank (Retell adds values) settle on the greater name whichever
    arrives first; an empty status counts as none."""
    statuses = {"call_started": "zeta_new", "call_ended": "alpha_new", "call_analyzed": ""}
    for number, order in enumerate(itertools.permutations(EVENTS)):
        call_id = f"call_unranked_{number}"
        for name in order:
            await send(client, event(name, call_id, call_status=statuses[name]))
        stored = await row(db, call_id)
        assert stored is not None
        assert stored["call_status"] == "zeta_new", order


async def test_a_row_made_by_a_function_is_merged_and_keeps_its_appointment(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A booking mid-call creates the call's row; the later events fill that same row, and the
    appointment stays linked to it."""
    booking = load_fixture("custom_function_book_appointment.json")
    booking["call"]["agent_id"] = clinic.agent_id
    booking["call"]["call_id"] = CALL_ID
    booking["args"].update({"date": DAY, "time": "09:00", "staff_name": "Dr. Ada Lee"})
    booked = await post_signed(client, "/retell/functions/book_appointment", booking)
    assert booked.status_code == 200, booked.text
    assert booked.json()["ok"] is True, booked.text
    log_id = await db.fetchval(
        "select id from customer_call_logs where retell_call_id = $1", CALL_ID
    )
    assert log_id is not None

    responses = await asyncio.gather(*(send(client, event(name)) for name in EVENTS))
    assert [r.status_code for r in responses] == [204] * 3
    rows = await db.fetch("select id, call_status, call_summary from customer_call_logs")
    assert len(rows) == 1
    assert rows[0]["id"] == log_id
    assert rows[0]["call_status"] == "ended"
    assert rows[0]["call_summary"] is not None
    linked = await db.fetchval("select call_log_id from appointments")
    assert linked == log_id


async def test_events_first_then_voicemail_links_to_the_same_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A voicemail left after call_started arrived links to the row the webhook created."""
    await send(client, event("call_started"))
    message = load_fixture("custom_function_leave_voicemail.json")
    message["call"]["agent_id"] = clinic.agent_id
    message["call"]["call_id"] = CALL_ID
    left = await post_signed(client, "/retell/functions/leave_voicemail", message)
    assert left.status_code == 200, left.text
    await send(client, event("call_ended"))
    log_id = await db.fetchval(
        "select id from customer_call_logs where retell_call_id = $1", CALL_ID
    )
    assert await db.fetchval("select count(*) from customer_call_logs") == 1
    assert await db.fetchval("select call_log_id from voicemails") == log_id


async def test_function_row_and_events_concurrently_make_one_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, database_url: str
) -> None:
    """ensure_call_log racing the three events leaves one row, ended, with the appointment."""
    staff = clinic.staff["Dr. Ada Lee"]
    appointment = await add_appointment(db, staff, date(2027, 1, 6), time(9))
    link = """
        update appointments set call_log_id = ensure_call_log(
          (select c from agent_configurations c where c.id = $2), $3::jsonb)
        where id = $1
    """
    call = {"call_id": CALL_ID, "call_status": "ongoing", "call_type": "phone_call"}

    async def from_function() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                link, appointment, clinic.configuration_id, orjson.dumps(call).decode()
            )
        finally:
            await conn.close()

    await asyncio.gather(from_function(), *(send(client, event(name)) for name in EVENTS))
    rows = await db.fetch("select id, call_status from customer_call_logs")
    assert len(rows) == 1
    assert rows[0]["call_status"] == "ended"
    assert await db.fetchval("select call_log_id from appointments") == rows[0]["id"]


async def test_unknown_agent_is_acknowledged_and_not_stored(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An event for an agent no clinic uses gets 204 and stores nothing."""
    response = await send(client, event("call_ended", agent_id="agent_nobody"))
    assert response.status_code == 204
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_other_events_are_ignored(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """transcript_updated and transfer events get 204 and store nothing."""
    for name in ("transcript_updated", "transfer_started", "call_inbound"):
        body = event("call_started")
        body["event"] = name
        assert (await send(client, body)).status_code == 204
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_web_call_without_numbers_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A dashboard web call, with no numbers or direction, is stored too."""
    body = event("call_ended", "call_web_1", call_type="web_call")
    for field in ("from_number", "to_number", "direction"):
        del body["call"][field]
    assert (await send(client, body)).status_code == 204
    stored = await row(db, "call_web_1")
    assert stored is not None
    assert stored["call_type"] == "web_call"
    assert stored["from_number"] is None
    assert stored["direction"] is None
    assert stored["call_status"] == "ended"


async def test_bad_signature_is_refused_and_nothing_written(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A body signed with another key is 401 with the error shape, and no row is written."""
    raw = orjson.dumps(event("call_ended"))
    response = await client.post(
        "/retell/webhook", content=raw, headers=signed_headers(raw, key="wrong-key")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_body_over_the_limit_is_refused(
    make_app: Callable[..., Starlette], db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A webhook body over max_webhook_body_bytes is 413 and stores nothing."""
    application = make_app(max_webhook_body_bytes=4096)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as small:
            response = await send(small, event("call_ended"))
            fits = await send(small, event("call_started"))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert fits.status_code == 204
    ended = "select count(*) from customer_call_logs where ended_at is not null"
    assert await db.fetchval(ended) == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (orjson.dumps({"event": "call_ended", "call": {"agent_id": "x"}}), 400),
        (orjson.dumps({"event": "call_ended", "call": {"call_id": "c", "duration_ms": "x"}}), 400),
    ],
)
async def test_malformed_bodies_are_4xx(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, raw: bytes, status: int
) -> None:
    """Non-JSON, non-object and malformed call objects get a 4xx error body and no row."""
    response = await post_signed(client, "/retell/webhook", raw)
    assert response.status_code == status
    assert set(response.json()) == {"error", "message"}
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_non_ascii_transcript_is_stored_exactly(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Accents and emoji in the transcript survive the signature check and storage unchanged."""
    words = "Agent: ¿En qué puedo ayudarle?\nUser: Quiero una cita con la Dra. Núñez 🦷\n"
    body = event("call_ended", transcript=words)
    raw = orjson.dumps(body)
    assert "Núñez".encode() in raw
    assert (await post_signed(client, "/retell/webhook", raw)).status_code == 204
    stored = await row(db)
    assert stored is not None
    assert stored["transcript"] == words


async def test_call_ending_before_it_starts_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Timestamps that put the end before the start are 422 and store nothing."""
    body = event("call_ended", end_timestamp=1)
    response = await send(client, body)
    assert response.status_code == 422
    assert response.json()["error"] == "inconsistent_call"
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_text_the_database_cannot_hold_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A NUL character or a lone surrogate in the transcript is 400 with the error shape."""
    for text in (b"\\u0000", b"\\ud800"):
        raw = orjson.dumps(event("call_ended", transcript="marker")).replace(b"marker", text)
        response = await post_signed(client, "/retell/webhook", raw)
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error", "message"}
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_event_that_is_not_a_name_is_ignored(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An `event` that is a list, a number or missing is acknowledged and ignored."""
    for value in ([], ["call_ended"], 3, None):
        body = event("call_ended")
        body["event"] = value
        assert (await send(client, body)).status_code == 204
    assert await db.fetchval("select count(*) from customer_call_logs") == 0

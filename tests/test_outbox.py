"""The outbox is written by the custom functions, in their transaction: committed work leaves
its notifications, refused or repeated work none; call_ended fills the messages' recording."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import date, time

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from tests.calls import CALLER, MONDAY_MORNING, WEDNESDAY, call, signed_at
from tests.conftest import Clock, load_fixture, post_signed
from tests.factories import Clinic, add_appointment, create_clinic
from tests.outbox import add_endpoint, outbox_rows

CALL_ID = "call_5b0e8c2f71d94a6e93c4a1f7d28"
RECORDING = f"https://recordings.retell.example/{CALL_ID}/recording.wav"


@pytest.fixture(autouse=True)
def monday_morning(clock: Clock) -> None:
    clock.now = MONDAY_MORNING


@pytest.fixture
async def channels(db: asyncpg.Connection, clinic: Clinic) -> dict[str, uuid.UUID]:
    """A webhook taking everything, an email taking bookings only, an on-call SMS number."""
    return {
        "webhook": await add_endpoint(db, clinic),
        "email": await add_endpoint(
            db,
            clinic,
            kind="email",
            target="frontdesk@brightside.example",
            events=["appointment.booked", "voicemail.created"],
        ),
        "sms": await add_endpoint(db, clinic, kind="sms", target="+16175550142"),
    }


async def book(client: httpx.AsyncClient, clock: Clock, **args: str) -> dict[str, object]:
    args = {"patient_name": "Maria Gonzalez", "date": WEDNESDAY, "time": "10:00", **args}
    args.setdefault("staff_name", "Dr. Lee")
    return await call(client, clock, "book_appointment", args, call_id="call_outbox_1")


@pytest.mark.usefixtures("channels")
async def test_booking_queues_one_notification_per_interested_channel(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """appointment.booked for the webhook and the email; SMS is for urgent messages only."""
    result = await book(client, clock, notes="Sensitive tooth, lower left")
    assert result["booked"] is True
    rows = await outbox_rows(db)
    assert [(r["event"], r["kind"], r["status"]) for r in rows] == [
        ("appointment.booked", "email", "pending"),
        ("appointment.booked", "webhook", "pending"),
    ]
    data = rows[0]["data"]
    assert data == {
        "appointment_id": result["appointment_id"],
        "agent_id": clinic.agent_id,
        "business_name": "Brightside Dental",
        "timezone": "America/New_York",
        "patient_name": "Maria Gonzalez",
        "patient_phone": CALLER,
        "date": WEDNESDAY,
        "time": "10:00",
        "start": "2026-12-02T10:00:00-05:00",
        "duration_minutes": 30,
        "staff_member_id": str(clinic.staff["Dr. Ada Lee"]),
        "staff_name": "Dr. Ada Lee",
        "appointment_type": None,
        "status": "scheduled",
    }
    assert {r["appointment_id"] for r in rows} == {uuid.UUID(str(result["appointment_id"]))}


@pytest.mark.usefixtures("channels")
async def test_retried_booking_queues_nothing_more(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
) -> None:
    """Retell's retry of the same booking answers the first result and notifies no one again."""
    first = await book(client, clock)
    again = await book(client, clock)
    assert again["appointment_id"] == first["appointment_id"]
    assert len(await outbox_rows(db)) == 2


@pytest.mark.usefixtures("channels")
async def test_refused_booking_leaves_no_notification(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """A taken slot, a date in the past, an unknown staff member: no rows in the outbox."""
    await add_appointment(db, clinic.staff["Dr. Ada Lee"], WEDNESDAY_DATE, time(10))
    taken = await book(client, clock)
    past = await book(client, clock, date="2026-11-01")
    nobody = await book(client, clock, staff_name="Dr. Nobody")
    assert [r["ok"] for r in (taken, past, nobody)] == [False, False, False]
    assert await outbox_rows(db) == []


@pytest.mark.usefixtures("channels")
async def test_booking_answered_503_leaves_no_notification(
    make_app: Callable[..., Starlette],
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """A booking stopped at the deadline (its staff member locked elsewhere) leaves nothing."""
    app = make_app(request_deadline_seconds=0.5)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            async with db.transaction():
                await db.execute(
                    "select lock_staff($1)",
                    clinic.staff["Dr. Ada Lee"],
                )
                response = await post_signed(
                    c,
                    "/retell/functions/book_appointment",
                    _booking_body(clinic),
                    timestamp_ms=int(clock().timestamp() * 1000),
                )
            assert response.status_code == 503
    assert await db.fetchval("select count(*) from appointments") == 0
    assert await outbox_rows(db) == []


WEDNESDAY_DATE = date.fromisoformat(WEDNESDAY)


def _booking_body(clinic: Clinic) -> dict[str, object]:
    body = copy.deepcopy(load_fixture("custom_function_book_appointment.json"))
    body["call"].update(agent_id=clinic.agent_id, call_id="call_outbox_503", from_number=CALLER)
    body["args"] = {
        "patient_name": "Maria Gonzalez",
        "date": WEDNESDAY,
        "time": "10:00",
        "staff_name": "Dr. Lee",
    }
    return body


@pytest.mark.usefixtures("channels")
async def test_moves_and_cancellations_are_notified_once(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
) -> None:
    """rescheduled carries where it was; a repeated move or cancel queues nothing new."""
    booked = await book(client, clock)
    move = {"appointment_id": booked["appointment_id"], "new_date": WEDNESDAY, "new_time": "14:00"}
    moved = await call(client, clock, "reschedule_appointment", move)
    assert moved["booked"] is True
    await call(client, clock, "reschedule_appointment", move)
    cancel = {"appointment_id": booked["appointment_id"]}
    assert (await call(client, clock, "cancel_appointment", cancel))["cancelled"] is True
    assert (await call(client, clock, "cancel_appointment", cancel))["cancelled"] is True
    webhook = [r for r in await outbox_rows(db) if r["kind"] == "webhook"]
    assert [r["event"] for r in webhook] == [
        "appointment.booked",
        "appointment.rescheduled",
        "appointment.cancelled",
    ]
    rescheduled = webhook[1]["data"]
    assert (rescheduled["time"], rescheduled["previous"]["time"]) == ("14:00", "10:00")
    assert webhook[2]["data"]["status"] == "cancelled"
    # The email endpoint asked for bookings only.
    email = [r["event"] for r in await outbox_rows(db) if r["kind"] == "email"]
    assert email == ["appointment.booked"]


@pytest.mark.usefixtures("channels")
async def test_voicemail_queues_its_notice_and_sms_only_when_urgent(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
) -> None:
    """Each message once (a retry stores and queues nothing more); urgent ones also by SMS."""
    args = {"message": "Please call about my bill.", "caller_name": "James Whitaker"}
    normal = await call(client, clock, "leave_voicemail", args, call_id="call_vm_n")
    await call(client, clock, "leave_voicemail", args, call_id="call_vm_n")
    urgent_args = {"message": "My crown came off and it hurts.", "urgent": True}
    urgent = await call(client, clock, "leave_voicemail", urgent_args, call_id="call_vm_u")
    rows = await outbox_rows(db)
    by_message = Counter((str(r["voicemail_id"]), r["kind"]) for r in rows)
    assert by_message == {
        (normal["voicemail_id"], "webhook"): 1,
        (normal["voicemail_id"], "email"): 1,
        (urgent["voicemail_id"], "webhook"): 1,
        (urgent["voicemail_id"], "email"): 1,
        (urgent["voicemail_id"], "sms"): 1,
    }
    data = next(r["data"] for r in rows if str(r["voicemail_id"]) == urgent["voicemail_id"])
    assert (data["caller_phone"], data["priority"], data["is_urgent"]) == (CALLER, "urgent", True)
    assert data["call_id"] == "call_vm_u"
    assert "message" not in data


async def test_refused_voicemail_and_other_clinics_queue_nothing(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """A clinic without channels queues nothing; another clinic's channels hear nothing."""
    other = await create_clinic(db, agent_id="agent_0ther0000000000000000000", with_staff=False)
    await add_endpoint(db, other)
    await call(client, clock, "leave_voicemail", {"message": "Hello"}, call_id="call_vm_x")
    assert await outbox_rows(db) == []
    await db.execute(
        "update agent_configurations set voicemail_enabled = false where id = $1",
        clinic.configuration_id,
    )
    await add_endpoint(db, clinic)
    refused = await call(client, clock, "leave_voicemail", {"message": "Hi"}, call_id="call_vm_y")
    assert refused["ok"] is False
    assert await outbox_rows(db) == []


async def _call_event(
    client: httpx.AsyncClient, clock: Clock, name: str, call_id: str = CALL_ID
) -> None:
    body = copy.deepcopy(load_fixture(f"webhook_{name}.json"))
    body["call"]["call_id"] = call_id
    response = await post_signed(client, "/retell/webhook", body, timestamp_ms=signed_at(clock))
    assert response.status_code == 204, response.text


async def _recordings(db: asyncpg.Connection) -> list[tuple[str | None, int | None]]:
    rows = await db.fetch("select recording_url, duration_seconds from voicemails order by id")
    return [(r["recording_url"], r["duration_seconds"]) for r in rows]


@pytest.mark.parametrize(
    "order",
    [
        ["message", "message", "call_started", "call_ended", "call_analyzed"],
        ["call_started", "message", "call_analyzed", "message", "call_ended"],
        ["call_ended", "call_analyzed", "message", "message"],
    ],
)
async def test_call_end_fills_every_message_of_the_call_in_any_order(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
    order: list[str],
) -> None:
    """recording_url and duration_seconds (55.82 s: 56) on both messages of the call."""
    messages = iter(["Please call me back.", "Also, can I move my cleaning?"])
    for step in order:
        if step == "message":
            args = {"message": next(messages)}
            await call(client, clock, "leave_voicemail", args, call_id=CALL_ID)
        else:
            await _call_event(client, clock, step)
    assert await _recordings(db) == [(RECORDING, 56), (RECORDING, 56)]


async def test_message_and_call_end_at_the_same_moment(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A message and its call's call_ended in flight together: the message gets the recording."""
    calls = [f"call_race_{n}" for n in range(8)]
    for call_id in calls:
        await _call_event(client, clock, "call_started", call_id)
    await asyncio.gather(
        *(call(client, clock, "leave_voicemail", {"message": "Hi"}, call_id=c) for c in calls),
        *(_call_event(client, clock, "call_ended", c) for c in calls),
    )
    rows = await db.fetch("select recording_url, duration_seconds from voicemails")
    assert len(rows) == len(calls)
    assert {(r["recording_url"] is not None, r["duration_seconds"]) for r in rows} == {(True, 56)}

"""Tenant isolation: another clinic's ids, through every function and webhook, reach nothing."""

from __future__ import annotations

from datetime import time
from typing import Any

import asyncpg
import httpx
import pytest

from tests.calls import CALLER, envelope
from tests.conftest import load_fixture, post_signed
from tests.factories import Clinic, add_appointment, create_clinic
from tests.test_faults import next_weekday

OTHER_AGENT = "agent_0b9e5d1c7a3f4e2d8c6b5a4f3e"


@pytest.fixture
async def other(db: asyncpg.Connection) -> Clinic:
    """A second clinic, with its own staff, forward number and an appointment of our caller."""
    clinic = await create_clinic(
        db,
        agent_id=OTHER_AGENT,
        business_name="Harbor Orthodontics",
        forward_number="+16175550999",
    )
    return clinic


@pytest.fixture
async def theirs(db: asyncpg.Connection, other: Clinic) -> str:
    """The caller's appointment at the other clinic."""
    found = await add_appointment(
        db, other.staff["Dr. Ada Lee"], next_weekday(), time(11), phone=CALLER
    )
    return str(found)


def body(
    clinic: Clinic, name: str, args: dict[str, Any], call_id: str = "call_iso"
) -> dict[str, Any]:
    """A phone call's envelope to this clinic's agent (Retell's example body, these args)."""
    return envelope(name, args, agent_id=clinic.agent_id, call_id=call_id)


async def call(client: httpx.AsyncClient, payload: Any, **params: str) -> dict[str, Any]:
    response = await post_signed(
        client, f"/retell/functions/{payload['name']}", payload, params=params or None
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def snapshot(db: asyncpg.Connection, appointment_id: str) -> Any:
    return await db.fetchrow(
        """
        select status, appointment_date, appointment_time, staff_member_id, patient_name
        from appointments where id = $1
        """,
        appointment_id,
    )


async def test_other_clinics_staff_ids_are_never_offered_or_booked(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, other: Clinic
) -> None:
    """check_availability and book_appointment with another clinic's staff id reach no one there."""
    day = next_weekday().isoformat()
    their_lee = str(other.staff["Dr. Ada Lee"])
    theirs_ids = {str(s) for s in other.staff.values()}

    offered = await call(
        client, body(clinic, "check_availability", {"date": day, "staff_member_id": their_lee})
    )
    assert not {s["staff_member_id"] for s in offered.get("slots", [])} & theirs_ids

    # An agent_id smuggled into args, or in the query string, does not change the tenant.
    smuggled = await call(
        client,
        body(clinic, "check_availability", {"date": day, "agent_id": OTHER_AGENT}),
        agent_id=OTHER_AGENT,
    )
    assert smuggled["ok"] is True
    assert {s["staff_member_id"] for s in smuggled["slots"]} <= {
        str(s) for s in clinic.staff.values()
    }

    booked = await call(
        client,
        body(
            clinic,
            "book_appointment",
            {
                "patient_name": "Maria Gonzalez",
                "date": day,
                "time": "10:00",
                "staff_member_id": their_lee,
            },
        ),
    )
    assert booked["ok"] is False, booked
    assert booked.get("booked") is False
    assert not {s["staff_member_id"] for s in booked.get("alternatives", [])} & theirs_ids
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_other_clinics_appointment_cannot_be_found_cancelled_or_moved(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, theirs: str
) -> None:
    """The caller's appointment at another clinic is invisible and untouchable through this one."""
    before = await snapshot(db, theirs)
    found = await call(client, body(clinic, "find_appointments", {}))
    assert theirs not in {a["appointment_id"] for a in found.get("appointments", [])}
    named = await call(
        client,
        body(
            clinic,
            "find_appointments",
            {"patient_phone": CALLER, "patient_name": "Maria Gonzalez"},
        ),
    )
    assert theirs not in {a["appointment_id"] for a in named.get("appointments", [])}

    cancelled = await call(client, body(clinic, "cancel_appointment", {"appointment_id": theirs}))
    assert cancelled["ok"] is False or cancelled.get("cancelled") is False, cancelled
    by_date = await call(
        client,
        body(
            clinic,
            "cancel_appointment",
            {"date": next_weekday().isoformat(), "time": "11:00"},
        ),
    )
    assert by_date.get("cancelled") is not True, by_date

    moved = await call(
        client,
        body(
            clinic,
            "reschedule_appointment",
            {
                "appointment_id": theirs,
                "new_date": next_weekday().isoformat(),
                "new_time": "14:00",
            },
        ),
    )
    assert moved["ok"] is False, moved
    assert await snapshot(db, theirs) == before
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_voicemail_and_forwarding_stay_with_the_calling_clinic(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, other: Clinic
) -> None:
    """A voicemail is filed under the calling clinic, and forwarding gives its own number."""
    saved = await call(
        client,
        body(clinic, "leave_voicemail", {"message": "Call me back", "agent_id": OTHER_AGENT}),
    )
    assert saved["saved"] is True
    owners = await db.fetch("select agent_configuration_id, user_id from voicemails")
    assert [(r["agent_configuration_id"], r["user_id"]) for r in owners] == [
        (clinic.configuration_id, clinic.user_id)
    ]
    forward = await call(client, body(clinic, "forward_call", {"agent_id": OTHER_AGENT}))
    if forward["forward"]:
        assert forward["forward_number"] == "+16175550142"
    logs = await db.fetch("select agent_configuration_id from customer_call_logs")
    assert {r["agent_configuration_id"] for r in logs} == {clinic.configuration_id}


async def test_call_events_cannot_move_a_call_to_another_clinic(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, other: Clinic
) -> None:
    """A later event naming another clinic's agent for the same call_id does not re-home the row."""
    started = load_fixture("webhook_call_started.json")
    started["call"]["agent_id"] = clinic.agent_id
    assert (await post_signed(client, "/retell/webhook", started)).status_code == 204
    ended = load_fixture("webhook_call_ended.json")
    ended["call"]["call_id"] = started["call"]["call_id"]
    ended["call"]["agent_id"] = OTHER_AGENT
    response = await post_signed(client, "/retell/webhook", ended)
    assert response.status_code < 500
    rows = await db.fetch("select agent_configuration_id, user_id from customer_call_logs")
    assert [(r["agent_configuration_id"], r["user_id"]) for r in rows] == [
        (clinic.configuration_id, clinic.user_id)
    ]


async def test_inbound_never_reveals_another_clinics_appointment(
    client: httpx.AsyncClient, clinic: Clinic, theirs: str
) -> None:
    """The caller's appointment at another clinic is not spoken by this clinic's inbound answer."""
    inbound = load_fixture("webhook_call_inbound.json")
    inbound["call_inbound"]["agent_id"] = clinic.agent_id
    inbound["call_inbound"]["from_number"] = CALLER
    response = await post_signed(client, "/retell/inbound", inbound)
    variables = response.json()["call_inbound"]["dynamic_variables"]
    assert variables["business_name"] == "Brightside Dental"
    assert variables["caller_name"] == ""
    assert variables["next_appointment"] == ""

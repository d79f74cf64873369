"""find, cancel and reschedule: only the caller's own appointments, never another clinic's."""

from __future__ import annotations

import uuid
from datetime import date, time
from typing import Any

import asyncpg
import httpx
import pytest

from tests.calls import CALLER, MONDAY_MORNING, call
from tests.conftest import Clock
from tests.factories import Clinic, add_appointment, create_clinic

OTHER_PHONE = "+16175550999"
DEC_2 = date(2026, 12, 2)
DEC_3 = date(2026, 12, 3)


@pytest.fixture(autouse=True)
def monday_morning(clock: Clock) -> None:
    clock.now = MONDAY_MORNING


async def status_of(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "select status, appointment_date, appointment_time, staff_member_id from appointments"
        " where id = $1",
        appointment_id,
    )
    assert row is not None
    return row


async def test_find_lists_only_the_callers_upcoming_appointments(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """The caller hears their own upcoming appointments, not past, cancelled or others' ones."""
    lee, park = clinic.staff["Dr. Ada Lee"], clinic.staff["Sam Park"]
    later = await add_appointment(db, park, DEC_3, time(14), duration=45)
    sooner = await add_appointment(db, lee, DEC_2, time(9))
    await add_appointment(db, lee, date(2026, 11, 27), time(9), status="completed")
    await add_appointment(db, lee, DEC_2, time(11), status="cancelled")
    await add_appointment(db, lee, DEC_2, time(10), phone=OTHER_PHONE, name="Kim Ode")
    result = await call(client, clock, "find_appointments", {})
    assert result["ok"] is True
    assert [a["appointment_id"] for a in result["appointments"]] == [str(sooner), str(later)]
    assert result["appointments"][0] == {
        "appointment_id": str(sooner),
        "date": "2026-12-02",
        "time": "09:00",
        "start": "2026-12-02T09:00:00-05:00",
        "staff_member_id": str(lee),
        "staff_name": "Dr. Ada Lee",
        "appointment_type": None,
        "status": "scheduled",
    }
    assert result["message"] == (
        "You have 2 upcoming appointments: Wednesday, December 2 at 9:00 AM with Dr. Ada Lee "
        "and Thursday, December 3 at 2:00 PM with Sam Park."
    )


async def test_find_under_another_number_needs_the_patients_name(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Another number is honoured only with the patient's name, matched case-insensitively."""
    theirs = await add_appointment(
        db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10), phone=OTHER_PHONE, name="Kim Ode"
    )
    result = await call(client, clock, "find_appointments", {"patient_phone": "617-555-0999"})
    assert result["ok"] is False
    assert result["appointments"] == []
    assert "full name" in result["message"]
    result = await call(
        client,
        clock,
        "find_appointments",
        {"patient_phone": "617-555-0999", "patient_name": "Someone Else"},
    )
    assert result["ok"] is True
    assert result["appointments"] == []
    assert result["message"] == "I don't see any upcoming appointments under that number."
    result = await call(
        client,
        clock,
        "find_appointments",
        {"patient_phone": "(617) 555-0999", "patient_name": "kim ODE"},
    )
    assert [a["appointment_id"] for a in result["appointments"]] == [str(theirs)]


async def test_web_call_must_give_number_and_name(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call with no number of its own finds nothing until it gives both number and name."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    web: dict[str, Any] = {"from_number": None, "to_number": None, "call_type": "web_call"}
    for args in ({}, {"patient_phone": CALLER}, {"patient_name": "Maria Gonzalez"}):
        result = await call(client, clock, "find_appointments", args, **web)
        assert result["ok"] is False, args
        assert result["message"] == (
            "To find the booking I need the phone number and the full name it was made under."
        )
    result = await call(
        client,
        clock,
        "find_appointments",
        {"patient_phone": CALLER, "patient_name": "maria gonzalez"},
        **web,
    )
    assert [a["appointment_id"] for a in result["appointments"]] == [str(mine)]
    result = await call(
        client,
        clock,
        "cancel_appointment",
        {"appointment_id": str(mine), "patient_phone": CALLER},
        **web,
    )
    assert result["ok"] is False
    assert result["cancelled"] is False
    assert (await status_of(db, mine))["status"] == "scheduled"


async def test_cancel_by_id_and_twice(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Cancelling by id sets status cancelled; cancelling again is still ok."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    result = await call(client, clock, "cancel_appointment", {"appointment_id": str(mine)})
    assert result == {
        "ok": True,
        "cancelled": True,
        "appointment_id": str(mine),
        "message": (
            "I've cancelled the appointment on Wednesday, December 2 at 10:00 AM with Dr. Ada Lee."
        ),
    }
    assert (await status_of(db, mine))["status"] == "cancelled"
    again = await call(client, clock, "cancel_appointment", {"appointment_id": str(mine)})
    assert again["ok"] is True
    assert again["cancelled"] is True
    assert "already cancelled" in again["message"]
    by_date = await call(client, clock, "cancel_appointment", {"date": "2026-12-02"})
    assert by_date["ok"] is True
    assert by_date["appointment_id"] == str(mine)


async def test_cancel_by_date_asks_which_when_ambiguous(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Two appointments on the date: ok false with the choices; with the time, that one goes."""
    lee = clinic.staff["Dr. Ada Lee"]
    first = await add_appointment(db, lee, DEC_2, time(9))
    second = await add_appointment(db, lee, DEC_2, time(14, 30), name="Tom Gonzalez")
    result = await call(client, clock, "cancel_appointment", {"date": "2026-12-02"})
    assert result["ok"] is False
    assert result["cancelled"] is False
    assert result["reason"] == "ambiguous_appointment"
    assert [c["appointment_id"] for c in result["choices"]] == [str(first), str(second)]
    assert result["message"] == (
        "You have more than one appointment that day, at 9:00 AM or 2:30 PM. Which one do you mean?"
    )
    result = await call(
        client, clock, "cancel_appointment", {"date": "2026-12-02", "time": "14:30"}
    )
    assert result["ok"] is True
    assert result["appointment_id"] == str(second)
    assert (await status_of(db, first))["status"] == "scheduled"
    assert (await status_of(db, second))["status"] == "cancelled"
    result = await call(client, clock, "cancel_appointment", {"date": "2026-12-04"})
    assert result["ok"] is False
    assert result["reason"] == "appointment_not_found"


async def test_cannot_cancel_someone_elses_appointment(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An appointment under another number can't be cancelled by id without its name."""
    theirs = await add_appointment(
        db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10), phone=OTHER_PHONE, name="Kim Ode"
    )
    result = await call(client, clock, "cancel_appointment", {"appointment_id": str(theirs)})
    assert result["ok"] is False
    assert result["reason"] == "appointment_not_found"
    assert (await status_of(db, theirs))["status"] == "scheduled"


async def test_cancel_needs_a_selector(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Without an id or a date, cancel asks which appointment."""
    await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    result = await call(client, clock, "cancel_appointment", {})
    assert result["ok"] is False
    assert result["message"].startswith("Which appointment do you mean?")
    assert await db.fetchval("select count(*) from appointments where status = 'cancelled'") == 0


async def test_reschedule_keeps_the_id_and_moves_the_row(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Rescheduling answers like a booking with the same appointment_id and moves the row."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    result = await call(
        client,
        clock,
        "reschedule_appointment",
        {"date": "2026-12-02", "new_date": "2026-12-03", "new_time": "15:00"},
    )
    assert result == {
        "ok": True,
        "booked": True,
        "appointment_id": str(mine),
        "date": "2026-12-03",
        "time": "15:00",
        "start": "2026-12-03T15:00:00-05:00",
        "staff_member_id": str(clinic.staff["Dr. Ada Lee"]),
        "staff_name": "Dr. Ada Lee",
        "message": (
            "Done: your appointment is now Thursday, December 3 at 3:00 PM with Dr. Ada Lee."
        ),
    }
    row = await status_of(db, mine)
    assert (row["appointment_date"], row["appointment_time"]) == (DEC_3, time(15))
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_reschedule_to_another_staff_member(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A reschedule naming another dentist moves the appointment to them."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    result = await call(
        client,
        clock,
        "reschedule_appointment",
        {
            "appointment_id": str(mine),
            "new_date": "2026-12-02",
            "new_time": "10:00",
            "staff_name": "Dr. Haddad",
        },
    )
    assert result["ok"] is True
    assert result["staff_name"] == "Dr. Omar Haddad"
    assert (await status_of(db, mine))["staff_member_id"] == clinic.staff["Dr. Omar Haddad"]


async def test_refused_move_changes_nothing(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Moving onto a taken slot is refused with alternatives; the original stays as it was."""
    lee = clinic.staff["Dr. Ada Lee"]
    mine = await add_appointment(db, lee, DEC_2, time(10))
    await add_appointment(db, lee, DEC_3, time(9), phone=OTHER_PHONE, name="Kim Ode")
    result = await call(
        client,
        clock,
        "reschedule_appointment",
        {"appointment_id": str(mine), "new_date": "2026-12-03", "new_time": "09:00"},
    )
    assert result["ok"] is False
    assert result["booked"] is False
    assert result["reason"] == "taken"
    assert [s["time"] for s in result["alternatives"]] == ["09:30", "10:00", "10:30"]
    assert result["message"].endswith("Your original appointment is unchanged.")
    row = await status_of(db, mine)
    assert (row["appointment_date"], row["appointment_time"], row["status"]) == (
        DEC_2,
        time(10),
        "scheduled",
    )


async def test_move_within_its_own_slot(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Moving a 10:00 visit to 10:15 overlaps only itself, so it is allowed."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    result = await call(
        client,
        clock,
        "reschedule_appointment",
        {"appointment_id": str(mine), "new_date": "2026-12-02", "new_time": "10:15"},
    )
    assert result["ok"] is True
    assert result["appointment_id"] == str(mine)
    assert (await status_of(db, mine))["appointment_time"] == time(10, 15)


RESCHEDULE_REFUSES_BAD_NEW_TIMES_CASES = [
    ({"new_date": "2026-11-02", "new_time": "09:00"}, "today is Monday, November 30, 2026"),
    ({"new_date": "Friday", "new_time": "09:00"}, "not a weekday name"),
    ({"new_date": "2026-12-04", "new_time": "25:00"}, "isn't a real clock time"),
    ({"new_date": "2026-12-04"}, "What time would suit you on the new day?"),
]


async def test_reschedule_refuses_bad_new_times(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """A past, weekday-named, impossible or missing new time is a sentence; nothing moves."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    for args, sentence in RESCHEDULE_REFUSES_BAD_NEW_TIMES_CASES:
        result = await call(
            client, clock, "reschedule_appointment", {"appointment_id": str(mine), **args}
        )
        assert result["ok"] is False
        assert sentence in result["message"]
        assert (await status_of(db, mine))["appointment_time"] == time(10)


async def test_clinics_never_see_each_others_rows(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Another clinic's staff and appointment ids, passed in args, are never read or changed."""
    other = await create_clinic(db, agent_id="agent_other_clinic", business_name="Elm Dental")
    their_lee = other.staff["Dr. Ada Lee"]
    theirs = await add_appointment(db, their_lee, DEC_2, time(10))  # the same caller's number

    found = await call(client, clock, "find_appointments", {})
    assert found["appointments"] == []
    for name, args in (
        ("cancel_appointment", {"appointment_id": str(theirs)}),
        ("cancel_appointment", {"date": "2026-12-02"}),
        (
            "reschedule_appointment",
            {"appointment_id": str(theirs), "new_date": "2026-12-03", "new_time": "11:00"},
        ),
    ):
        result = await call(client, clock, name, args)
        assert (result["ok"], result["reason"]) == (False, "appointment_not_found"), name
    row = await status_of(db, theirs)
    assert (row["status"], row["appointment_date"]) == ("scheduled", DEC_2)

    booked = await call(
        client,
        clock,
        "book_appointment",
        {
            "patient_name": "Maria Gonzalez",
            "date": "2026-12-02",
            "time": "11:00",
            "staff_member_id": str(their_lee),
        },
    )
    assert booked["ok"] is False
    assert booked["reason"] == "unknown_staff"
    assert "Elm" not in booked["message"]
    slots = await call(
        client,
        clock,
        "check_availability",
        {"date": "2026-12-02", "staff_member_id": str(their_lee)},
    )
    assert slots["ok"] is False
    assert slots["reason"] == "unknown_staff"
    assert await db.fetchval("select count(*) from appointments") == 1

    # The other clinic's own agent sees its row.
    found = await call(client, clock, "find_appointments", {}, agent_id="agent_other_clinic")
    assert [a["appointment_id"] for a in found["appointments"]] == [str(theirs)]


async def test_a_cancelled_appointment_cannot_be_moved(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Rescheduling a cancelled appointment is refused and offers a new booking instead."""
    mine = await add_appointment(
        db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10), status="cancelled"
    )
    result = await call(
        client,
        clock,
        "reschedule_appointment",
        {"appointment_id": str(mine), "new_date": "2026-12-03", "new_time": "11:00"},
    )
    assert result["ok"] is False
    assert result["reason"] == "appointment_cancelled"
    assert "book a new one" in result["message"]
    row = await status_of(db, mine)
    assert (row["status"], row["appointment_date"]) == ("cancelled", DEC_2)


async def test_a_retried_reschedule_is_harmless(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Sending the same move twice answers ok both times and leaves one moved appointment."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    args = {"appointment_id": str(mine), "new_date": "2026-12-03", "new_time": "11:00"}
    first = await call(client, clock, "reschedule_appointment", args)
    again = await call(client, clock, "reschedule_appointment", args)
    assert first["ok"] is True
    assert again["ok"] is True
    assert again["appointment_id"] == first["appointment_id"] == str(mine)
    row = await status_of(db, mine)
    assert (row["appointment_date"], row["appointment_time"]) == (DEC_3, time(11))
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_past_appointments_cannot_be_cancelled_or_moved(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An appointment that has already started is neither cancelled nor moved."""
    done = await add_appointment(db, clinic.staff["Dr. Ada Lee"], date(2026, 11, 27), time(9))
    result = await call(client, clock, "cancel_appointment", {"appointment_id": str(done)})
    assert result["ok"] is False
    assert result["message"] == "That appointment has already taken place, so I can't change it."
    result = await call(
        client,
        clock,
        "reschedule_appointment",
        {"appointment_id": str(done), "new_date": "2026-12-03", "new_time": "11:00"},
    )
    assert result["ok"] is False
    row = await status_of(db, done)
    assert (row["status"], row["appointment_date"]) == ("scheduled", date(2026, 11, 27))


@pytest.mark.parametrize("from_number", ["anonymous", "11111"])
async def test_a_caller_without_a_number_must_give_number_and_name(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
    from_number: str,
) -> None:
    """Withheld caller id is no number: find, cancel and move need both number and name."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    identity = "To find the booking I need the phone number and the full name it was made under."
    for name, args in [
        ("find_appointments", {}),
        ("find_appointments", {"patient_phone": CALLER}),
        ("cancel_appointment", {"date": "2026-12-02", "patient_phone": CALLER}),
        (
            "reschedule_appointment",
            {"date": "2026-12-02", "new_date": "2026-12-03", "new_time": "11:00"},
        ),
    ]:
        result = await call(client, clock, name, args, from_number=from_number)
        assert result["ok"] is False, (name, args)
        assert result["reason"] == "identity_required"
        assert result["message"] == identity
    result = await call(
        client,
        clock,
        "find_appointments",
        {"patient_phone": "617 555 0187", "patient_name": "Maria Gonzalez"},
        from_number=from_number,
    )
    assert [a["appointment_id"] for a in result["appointments"]] == [str(mine)]
    assert (await status_of(db, mine))["status"] == "scheduled"


async def test_a_retried_reschedule_by_date_answers_its_first_result(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Retell's retry of a move picked by date and time answers the move, not 'not found'."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    for args in (
        {"date": "2026-12-02", "time": "10:00", "new_date": "2026-12-03", "new_time": "11:00"},
        {"date": "2026-12-03", "new_date": "2026-12-04", "new_time": "09:00"},
    ):
        first = await call(client, clock, "reschedule_appointment", args)
        again = await call(client, clock, "reschedule_appointment", args)
        assert first["booked"] is True, first
        assert again == first
    assert first["appointment_id"] == str(mine)
    row = await status_of(db, mine)
    assert (row["appointment_date"], row["appointment_time"]) == (date(2026, 12, 4), time(9))
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_a_move_from_where_the_appointment_was_to_elsewhere_is_not_a_retry(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """After a move, asking to move the old date to another time finds nothing there."""
    mine = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DEC_2, time(10))
    args = {"date": "2026-12-02", "time": "10:00", "new_date": "2026-12-03", "new_time": "11:00"}
    assert (await call(client, clock, "reschedule_appointment", args))["booked"] is True
    other = await call(client, clock, "reschedule_appointment", {**args, "new_time": "14:00"})
    assert other["ok"] is False
    assert other["reason"] == "appointment_not_found"
    stranger = await call(client, clock, "reschedule_appointment", args, from_number="+16175550999")
    assert stranger["ok"] is False
    assert stranger["reason"] == "appointment_not_found"
    row = await status_of(db, mine)
    assert (row["appointment_date"], row["appointment_time"]) == (DEC_3, time(11))

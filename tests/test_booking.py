"""book_appointment: one booking per slot whatever the concurrency, linked to its call."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from tests.calls import CALLER, MONDAY_MORNING, WEDNESDAY, call
from tests.conftest import Clock
from tests.factories import Clinic, add_appointment, add_hours, add_staff, create_clinic


@pytest.fixture(autouse=True)
def monday_morning(clock: Clock) -> None:
    clock.now = MONDAY_MORNING


@pytest.fixture
async def roomy_client(
    make_app: Callable[..., Starlette], db: asyncpg.Connection
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose app has room to wait: the races below test correctness, not capacity.

    Bookings of one staff member run one at a time under its lock; on a busy test machine the
    default pool (10 connections, 1.5 s to acquire one) would turn the queue into 503s.
    """
    app = make_app(pool_max_size=16, pool_acquire_timeout_seconds=20, request_deadline_seconds=20)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            yield c


def booking(**args: Any) -> dict[str, Any]:
    args.setdefault("patient_name", "Maria Gonzalez")
    args.setdefault("date", WEDNESDAY)
    return args


async def book(
    client: httpx.AsyncClient, clock: Clock, *, call_id: str = "call_book_1", **args: Any
) -> dict[str, Any]:
    return await call(client, clock, "book_appointment", booking(**args), call_id=call_id)


async def available(
    client: httpx.AsyncClient, clock: Clock, **args: Any
) -> list[tuple[str, str, str]]:
    args.setdefault("date", WEDNESDAY)
    args.setdefault("max_slots", 100)
    result = await call(client, clock, "check_availability", args)
    return [(s["date"], s["time"], s["staff_name"]) for s in result["slots"]]


async def appointment_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        select a.id, a.patient_name, a.patient_phone, a.appointment_date, a.appointment_time,
               a.duration_minutes, a.appointment_type, a.notes, a.status, s.staff_name,
               l.retell_call_id
        from appointments a
        join staff_members s on s.id = a.staff_member_id
        left join customer_call_logs l on l.id = a.call_log_id
        order by a.starts_at, s.staff_name
        """
    )
    return rows


async def test_booking_stores_the_row_linked_to_the_call(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A booking stores a row with an E.164 phone, linked to a call log created for the call."""
    result = await book(
        client,
        clock,
        time="09:00",
        staff_name="Dr. Lee",
        patient_phone="(617) 555-0187",
        appointment_type="cleaning",
        notes="Prefers a text reminder.",
    )
    rows = await appointment_rows(db)
    assert len(rows) == 1
    row = rows[0]
    assert result == {
        "ok": True,
        "booked": True,
        "appointment_id": str(row["id"]),
        "date": WEDNESDAY,
        "time": "09:00",
        "start": "2026-12-02T09:00:00-05:00",
        "staff_member_id": str(clinic.staff["Dr. Ada Lee"]),
        "staff_name": "Dr. Ada Lee",
        "message": "You're booked for Wednesday, December 2 at 9:00 AM with Dr. Ada Lee.",
    }
    assert row["patient_phone"] == "+16175550187"
    assert (row["appointment_date"], row["appointment_time"]) == (date(2026, 12, 2), time(9))
    assert (row["duration_minutes"], row["appointment_type"]) == (30, "cleaning")
    assert row["notes"] == "Prefers a text reminder."
    assert row["retell_call_id"] == "call_book_1"
    log = await db.fetchrow(
        "select agent_configuration_id, from_number, to_number, direction"
        " from customer_call_logs where retell_call_id = 'call_book_1'"
    )
    assert log is not None
    assert log["agent_configuration_id"] == clinic.configuration_id
    assert (log["from_number"], log["direction"]) == (CALLER, "inbound")


async def test_national_number_follows_the_region_of_the_clinic_line(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """A London clinic's caller saying '020 7946 0018' is stored as +442079460018."""
    clinic = await create_clinic(db, timezone="Europe/London", business_hours=None)
    assert clinic.timezone == "Europe/London"
    result = await call(
        client,
        clock,
        "book_appointment",
        booking(time="10:00", staff_name="Ada", patient_phone="020 7946 0018"),
        to_number="+442079460000",
        from_number="+447700900123",
    )
    assert result["ok"] is True, result
    assert result["start"] == "2026-12-02T10:00:00+00:00"
    assert await db.fetchval("select patient_phone from appointments") == "+442079460018"


async def test_caller_number_is_the_default_phone(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Without patient_phone the booking is stored under the caller's own number."""
    result = await book(client, clock, time="09:30", staff_name="Lee")
    assert result["ok"] is True
    assert await db.fetchval("select patient_phone from appointments") == CALLER


async def test_a_phone_is_required_and_must_be_real(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A web call without patient_phone, or with a number too short, books nothing."""
    result = await call(
        client,
        clock,
        "book_appointment",
        booking(time="09:00"),
        from_number=None,
        to_number=None,
        call_type="web_call",
    )
    assert result["ok"] is False
    assert result["booked"] is False
    assert result["message"] == "What's the best phone number to reach the patient?"
    result = await book(client, clock, time="09:00", patient_phone="555-01")
    assert result["ok"] is False
    assert "area code" in result["message"]
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_several_bookings_in_one_call(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A parent books two children in one call: two rows linked to the same single call log."""
    first = await book(client, clock, time="09:00", staff_name="Lee", patient_name="Tom Gonzalez")
    second = await book(client, clock, time="09:30", staff_name="Lee", patient_name="Ana Gonzalez")
    assert first["ok"]
    assert second["ok"]
    assert first["appointment_id"] != second["appointment_id"]
    rows = await appointment_rows(db)
    assert [(r["patient_name"], r["retell_call_id"]) for r in rows] == [
        ("Tom Gonzalez", "call_book_1"),
        ("Ana Gonzalez", "call_book_1"),
    ]
    assert await db.fetchval("select count(*) from customer_call_logs") == 1


async def test_booking_off_the_grid_inside_a_window(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """9:10 is not on Dr. Lee's grid but lies inside her window: booked, and then not offered."""
    result = await book(client, clock, time="09:10", staff_name="Dr. Lee")
    assert result["ok"] is True
    assert result["time"] == "09:10"
    offered = [t for _, t, _ in await available(client, clock, staff_name="Dr. Lee")]
    assert offered[:2] == ["10:00", "10:30"]
    # 11:40 would run past the start of the 12:00 break.
    result = await book(client, clock, time="11:40", staff_name="Dr. Lee", call_id="call_2")
    assert result["ok"] is False
    assert result["reason"] == "outside_hours"
    assert len(await appointment_rows(db)) == 1


OUTSIDE_HOURS_IS_REFUSED_WITH_ALTERNATIVES_CASES = [
    ("12:15", "outside_hours", "We aren't seeing patients at that time"),
    ("18:00", "outside_hours", "We aren't seeing patients at that time"),
    ("08:30", "outside_hours", "We aren't seeing patients at that time"),
]


async def test_outside_hours_is_refused_with_alternatives(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """A time outside Dr. Lee's windows is refused with her three nearest free slots."""
    for when, reason, sentence in OUTSIDE_HOURS_IS_REFUSED_WITH_ALTERNATIVES_CASES:
        result = await book(client, clock, time=when, staff_name="Dr. Lee")
        assert result["ok"] is False
        assert result["booked"] is False
        assert result["reason"] == reason
        assert result["message"].startswith(sentence)
        assert 1 <= len(result["alternatives"]) <= 3
        offered = await available(client, clock, staff_name="Dr. Lee", days=7)
        for slot in result["alternatives"]:
            assert (slot["date"], slot["time"], slot["staff_name"]) in offered
        assert await db.fetchval("select count(*) from appointments") == 0


async def test_nearest_alternatives_around_a_lunch_break(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """12:15 with Dr. Lee gets 11:30, 13:00 and 11:00: the three nearest, nearest first."""
    result = await book(client, clock, time="12:15", staff_name="Dr. Lee")
    assert [s["time"] for s in result["alternatives"]] == ["11:00", "11:30", "13:00"]
    assert result["message"] == (
        "We aren't seeing patients at that time on Wednesday, December 2 at 12:15 PM. "
        "The nearest openings are 11:00 AM, 11:30 AM or 1:00 PM on Wednesday, December 2 "
        "with Dr. Ada Lee."
    )


async def test_too_soon_is_refused(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """At 9:10 on the day, 9:30 is inside the minimum notice: refused, offering later slots."""
    clock.now = datetime(2026, 12, 2, 14, 10, tzinfo=UTC)
    result = await book(client, clock, time="09:30", staff_name="Dr. Lee")
    assert result["ok"] is False
    assert result["reason"] == "too_soon"
    assert [s["time"] for s in result["alternatives"]] == ["10:30", "11:00", "11:30"]
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_taken_slot_is_refused_with_alternatives(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A slot someone else holds is refused as taken; alternatives are free and offered."""
    await add_appointment(db, clinic.staff["Dr. Ada Lee"], date(2026, 12, 2), time(10))
    result = await book(client, clock, time="10:00", staff_name="Dr. Lee")
    assert result["ok"] is False
    assert result["reason"] == "taken"
    assert [s["time"] for s in result["alternatives"]] == ["09:00", "09:30", "10:30"]
    assert result["message"].startswith(
        "That time is already taken on Wednesday, December 2 at 10:00 AM."
    )
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_any_staff_booking_picks_someone_free(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Without a staff name each booking at 9:00 goes to someone free, until nobody is."""
    names = []
    for n in range(3):
        result = await book(client, clock, time="09:00", call_id=f"call_any_{n}")
        assert result["ok"] is True
        names.append(result["staff_name"])
    assert sorted(names) == ["Dr. Ada Lee", "Dr. Omar Haddad", "Sam Park"]
    result = await book(client, clock, time="09:00", call_id="call_any_4")
    assert result["ok"] is False
    assert result["reason"] == "taken"
    assert await db.fetchval("select count(*) from appointments") == 3


async def test_dozens_of_simultaneous_bookings_for_one_slot(
    roomy_client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """32 concurrent calls wanting Dr. Lee at 10:00: one booked, 31 refused with alternatives."""
    results = await asyncio.gather(
        *(
            book(roomy_client, clock, time="10:00", staff_name="Dr. Lee", call_id=f"call_race_{n}")
            for n in range(32)
        )
    )
    winners = [r for r in results if r["ok"]]
    losers = [r for r in results if not r["ok"]]
    assert len(winners) == 1
    assert len(losers) == 31
    for loser in losers:
        assert loser["reason"] == "taken"
        assert [s["time"] for s in loser["alternatives"]] == ["09:00", "09:30", "10:30"]
    rows = await appointment_rows(db)
    assert len(rows) == 1
    assert str(rows[0]["id"]) == winners[0]["appointment_id"]


async def test_a_retried_booking_returns_the_same_appointment(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Retrying the same booking from the same call answers with the first appointment_id."""
    first = await book(client, clock, time="10:00", staff_name="Dr. Lee")
    again = await book(client, clock, time="10:00", staff_name="Ada Lee")
    assert first["ok"]
    assert again["ok"]
    assert again["appointment_id"] == first["appointment_id"]
    assert again["message"] == first["message"]
    other_call = await book(client, clock, time="10:00", staff_name="Dr. Lee", call_id="call_2")
    assert other_call["ok"] is False
    assert other_call["reason"] == "taken"
    assert len(await appointment_rows(db)) == 1


async def test_concurrent_retries_book_once(
    roomy_client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Ten simultaneous retries of one booking all succeed with one appointment_id, one row."""
    results = await asyncio.gather(
        *(book(roomy_client, clock, time="14:00", staff_name="Dr. Lee") for _ in range(10))
    )
    assert all(r["ok"] for r in results)
    assert len({r["appointment_id"] for r in results}) == 1
    assert len(await appointment_rows(db)) == 1
    assert await db.fetchval("select count(*) from customer_call_logs") == 1


async def test_any_staff_retry_returns_the_first_booking(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An any-staff retry answers with the first booking even if an earlier name has freed up."""
    held = await add_appointment(db, clinic.staff["Dr. Ada Lee"], date(2026, 12, 2), time(9))
    first = await book(client, clock, time="09:00")
    assert first["staff_name"] == "Dr. Omar Haddad"
    await db.execute("update appointments set status = 'cancelled' where id = $1", held)
    again = await book(client, clock, time="09:00")
    assert again["appointment_id"] == first["appointment_id"]
    assert await db.fetchval("select count(*) from appointments where status <> 'cancelled'") == 1


async def test_every_offered_slot_can_be_booked(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Every slot check_availability offers for a day books successfully, one after another."""
    await add_appointment(db, clinic.staff["Sam Park"], date(2026, 12, 2), time(10, 10))
    offered = await call(client, clock, "check_availability", {"date": WEDNESDAY, "max_slots": 100})
    assert len(offered["slots"]) > 30
    for n, slot in enumerate(offered["slots"]):
        result = await book(
            client,
            clock,
            call_id=f"call_every_{n}",
            time=slot["time"],
            staff_member_id=slot["staff_member_id"],
        )
        assert result["ok"] is True, (slot, result)
        assert result["start"] == slot["start"]
    assert await db.fetchval("select count(*) from appointments") == len(offered["slots"]) + 1
    assert await available(client, clock) == []


async def test_offered_slots_stay_bookable_with_buffers(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """With buffers, any slot offered at the moment is bookable; booking them in random order."""
    moss = await add_staff(db, clinic, "Rita Moss", duration=25, before=5, after=10)
    await add_hours(db, moss, [3], time(9), time(17), (time(12), time(12, 40)))
    chooser = random.Random(7)
    booked = 0
    while True:
        result = await call(
            client,
            clock,
            "check_availability",
            {"date": WEDNESDAY, "staff_name": "Rita Moss", "max_slots": 100},
        )
        if not result["slots"]:
            break
        slot = chooser.choice(result["slots"])
        booked_result = await book(
            client, clock, call_id=f"call_moss_{booked}", time=slot["time"], staff_name="Moss"
        )
        assert booked_result["ok"] is True, (slot, booked_result)
        booked += 1
    assert booked >= 8
    assert await db.fetchval("select count(*) from appointments") == booked


STAFF_NAMES_AS_CALLERS_SAY_THEM_CASES = [
    "Dr. Lee",
    "doctor lee",
    "Lee",
    "Ada",
    "ADA LEE",
    "dr ada lee",
    "Dr. Ada Lee",
]


async def test_staff_names_as_callers_say_them(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """Each way of saying Dr. Ada Lee books with her."""
    hours = ["09:00", "10:00", "11:00", "13:00", "14:00", "15:00", "16:00"]
    for spoken, at in zip(STAFF_NAMES_AS_CALLERS_SAY_THEM_CASES, hours, strict=True):
        result = await book(client, clock, time=at, staff_name=spoken)
        assert result["ok"] is True, spoken
        assert result["staff_name"] == "Dr. Ada Lee"


async def test_ambiguous_and_unknown_staff_names(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """With two Lees, 'Lee' asks which one; an unknown name lists who can be booked."""
    await add_staff(db, clinic, "Ben Lee")
    result = await book(client, clock, time="09:00", staff_name="Lee")
    assert result["ok"] is False
    assert result["booked"] is False
    assert result["reason"] == "ambiguous_staff"
    assert result["choices"] == ["Ben Lee", "Dr. Ada Lee"]
    assert result["message"] == (
        "More than one person matches that name: Ben Lee or Dr. Ada Lee. Which one would you like?"
    )
    result = await book(client, clock, time="09:00", staff_name="Dr. Smith")
    assert result["ok"] is False
    assert result["reason"] == "unknown_staff"
    assert result["choices"] == ["Ben Lee", "Dr. Ada Lee", "Dr. Omar Haddad", "Sam Park"]
    assert result["message"].startswith("I couldn't find that person.")
    assert await db.fetchval("select count(*) from appointments") == 0


FALLIBLE_LLM_ARGUMENTS_ARE_REFUSED_CASES: list[tuple[dict[str, Any], str]] = [
    (
        {"date": "2025-12-02", "time": "09:00"},
        "That date has already passed; today is Monday, November 30, 2026.",
    ),
    (
        {"date": "2026-11-29", "time": "09:00"},
        "That date has already passed; today is Monday, November 30, 2026.",
    ),
    (
        {"date": "2028-12-02", "time": "09:00"},
        "That date is more than a year away; today is Monday, November 30, 2026.",
    ),
    ({"time": "25:00"}, "That time isn't a real clock time"),
    ({"time": "9am"}, "I need the time as a 24-hour clock time like 09:30."),
    ({"date": "Wednesday", "time": "09:00"}, "not a weekday name"),
    ({"date": "2026-02-30", "time": "09:00"}, "doesn't exist on the calendar"),
    ({"date": 20261202, "time": "09:00"}, "calendar date like 2026-12-02"),
    ({"time": None}, "What time would you like?"),
    ({"patient_name": "  ", "time": "09:00"}, "May I have the patient's full name?"),
    ({"patient_name": None, "time": "09:00"}, "May I have the patient's full name?"),
    ({"time": "09:00", "duration_minutes": "long"}, "between 5 and 480 minutes"),
    ({"time": "09:00", "patient_email": "maria at home"}, "email"),
]


async def test_fallible_llm_arguments_are_refused(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
) -> None:
    """Wrong years, past dates, impossible times and missing fields: a sentence, no row."""
    for args, sentence in FALLIBLE_LLM_ARGUMENTS_ARE_REFUSED_CASES:
        body = booking(staff_name="Dr. Lee", **args)
        body = {k: v for k, v in body.items() if v is not None}
        result = await call(client, clock, "book_appointment", body, call_id="call_llm")
        assert result["ok"] is False
        assert result["booked"] is False
        assert sentence in result["message"]
        assert await db.fetchval("select count(*) from appointments") == 0


async def test_extra_unknown_arguments_are_ignored(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Arguments the function doesn't define change nothing."""
    result = await book(
        client, clock, time="09:00", staff_name="Lee", insurance="Delta", confirm=True
    )
    assert result["ok"] is True
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_bookings_on_daylight_saving_days(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """02:30 on spring-forward day doesn't exist; 01:30 on fall-back day is its first (EDT) one."""
    clock.now = datetime(2026, 10, 28, 12, tzinfo=UTC)
    clinic = await create_clinic(db, business_hours=None, with_staff=False)
    owl = await add_staff(db, clinic, "Olive Owl", duration=60)
    await db.execute(
        "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
        " values ($1, 0, '00:00', '24:00'::text::time)",
        owl,
    )
    result = await book(client, clock, date="2027-03-14", time="02:30")
    assert result["ok"] is False
    assert result["reason"] == "nonexistent_time"
    assert [s["start"] for s in result["alternatives"]] == [
        "2027-03-14T01:00:00-05:00",
        "2027-03-14T03:00:00-04:00",
        "2027-03-14T04:00:00-04:00",
    ]
    assert "clocks change" in result["message"]
    result = await book(client, clock, date="2026-11-01", time="01:30")
    assert result["ok"] is True
    assert result["start"] == "2026-11-01T01:30:00-04:00"
    row = await db.fetchrow("select starts_at, ends_at from appointments")
    assert row is not None
    assert row["starts_at"] == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert row["ends_at"] == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 60 real minutes


async def test_outbound_call_books_under_the_called_number(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """On an outbound call the patient is the number called (to_number), not the clinic line."""
    result = await call(
        client,
        clock,
        "book_appointment",
        booking(time="09:00", staff_name="Lee"),
        direction="outbound",
        from_number="+16175550100",
        to_number="+16175550123",
    )
    assert result["ok"] is True
    assert await db.fetchval("select patient_phone from appointments") == "+16175550123"


@pytest.mark.parametrize("from_number", ["anonymous", "11111", "iatizeia"])
async def test_a_caller_without_a_number_is_asked_for_one(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
    from_number: str,
) -> None:
    """Withheld caller id or a SIP trunk's non-number: the agent asks for a number; no row."""
    result = await call(
        client, clock, "book_appointment", booking(time="09:00"), from_number=from_number
    )
    assert result["ok"] is False
    assert result["booked"] is False
    assert result["reason"] == "phone_required"
    assert result["message"] == "What's the best phone number to reach the patient?"
    assert await db.fetchval("select count(*) from appointments") == 0
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_two_children_at_one_time_in_one_call_get_two_bookings(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A parent books Lily then Noah at 10:00 with anyone: two rows with two staff members."""
    lily = await book(client, clock, time="10:00", patient_name="Lily Carter")
    noah = await book(client, clock, time="10:00", patient_name="Noah Carter")
    assert lily["booked"] is True
    assert noah["booked"] is True
    assert noah["appointment_id"] != lily["appointment_id"]
    assert noah["staff_name"] != lily["staff_name"]
    rows = await appointment_rows(db)
    assert sorted((r["patient_name"], r["appointment_time"]) for r in rows) == [
        ("Lily Carter", time(10)),
        ("Noah Carter", time(10)),
    ]
    again = await book(client, clock, time="10:00", patient_name="lily carter")
    assert again["appointment_id"] == lily["appointment_id"]
    assert len(await appointment_rows(db)) == 2


async def test_another_patient_at_a_taken_time_in_the_same_call_hears_taken(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Noah asked for Dr. Lee's 10:00 that Lily just got: taken with alternatives, not hers."""
    lily = await book(client, clock, time="10:00", staff_name="Dr. Lee", patient_name="Lily Carter")
    noah = await book(client, clock, time="10:00", staff_name="Dr. Lee", patient_name="Noah Carter")
    assert lily["booked"] is True
    assert noah["ok"] is False
    assert noah["booked"] is False
    assert noah["reason"] == "taken"
    assert [s["time"] for s in noah["alternatives"]] == ["09:00", "09:30", "10:30"]
    assert "appointment_id" not in noah
    rows = await appointment_rows(db)
    assert [r["patient_name"] for r in rows] == ["Lily Carter"]


async def test_two_children_booked_at_once_get_two_staff_members(
    roomy_client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Lily's and Noah's 10:00 requests of one call, sent at once: two bookings, two staff."""
    results = await asyncio.gather(
        *(
            book(roomy_client, clock, time="10:00", patient_name=name)
            for name in ("Lily Carter", "Noah Carter", "Lily Carter", "Noah Carter")
        )
    )
    assert all(r["booked"] for r in results), results
    by_name = {(r["appointment_id"], r["staff_name"]) for r in results}
    assert len(by_name) == 2
    assert results[0]["appointment_id"] == results[2]["appointment_id"]
    assert results[1]["appointment_id"] == results[3]["appointment_id"]
    rows = await appointment_rows(db)
    assert sorted(r["patient_name"] for r in rows) == ["Lily Carter", "Noah Carter"]
    assert len({r["staff_name"] for r in rows}) == 2


async def test_a_caller_without_a_number_books_under_the_number_given(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """With withheld caller id the given number is stored, and the call's row holds no number."""
    result = await call(
        client,
        clock,
        "book_appointment",
        booking(time="09:00", staff_name="Lee", patient_phone="617 555 0123"),
        from_number="anonymous",
        call_id="call_anonymous",
    )
    assert result["booked"] is True
    assert await db.fetchval("select patient_phone from appointments") == "+16175550123"
    log = await db.fetchrow(
        "select from_number, to_number from customer_call_logs"
        " where retell_call_id = 'call_anonymous'"
    )
    assert log is not None
    assert (log["from_number"], log["to_number"]) == (None, "+16175550100")

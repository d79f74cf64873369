"""check_availability offers exactly the slots CONTRACT.md section 4 allows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.calls import MONDAY_MORNING, WEDNESDAY, call
from tests.conftest import Clock
from tests.factories import (
    Clinic,
    add_appointment,
    add_hours,
    add_staff,
    add_time_off,
    create_clinic,
)

LEE_WEDNESDAY = [
    "09:00",
    "09:30",
    "10:00",
    "10:30",
    "11:00",
    "11:30",
    "13:00",
    "13:30",
    "14:00",
    "14:30",
    "15:00",
    "15:30",
    "16:00",
    "16:30",
]


@pytest.fixture(autouse=True)
def monday_morning(clock: Clock) -> None:
    clock.now = MONDAY_MORNING


async def check(client: httpx.AsyncClient, clock: Clock, **args: Any) -> dict[str, Any]:
    args.setdefault("date", WEDNESDAY)
    args.setdefault("max_slots", 100)
    return await call(client, clock, "check_availability", args)


def times(result: dict[str, Any]) -> list[str]:
    return [slot["time"] for slot in result["slots"]]


async def add_clock_hours(
    conn: asyncpg.Connection, staff_id: uuid.UUID, weekday: int, start: str, end: str
) -> None:
    """Working hours given as text, so that a shift can end at 24:00."""
    await conn.execute(
        "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
        " values ($1, $2, $3::text::time, $4::text::time)",
        staff_id,
        weekday,
        start,
        end,
    )


async def test_break_splits_the_day(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """Dr. Lee's lunch break (12:00-13:00) is never offered; the rest of her day is."""
    result = await check(client, clock, staff_name="Dr. Lee")
    assert result["ok"] is True
    assert result["available"] is True
    assert result["timezone"] == "America/New_York"
    assert times(result) == LEE_WEDNESDAY
    assert {s["staff_name"] for s in result["slots"]} == {"Dr. Ada Lee"}
    assert result["slots"][0] == {
        "start": "2026-12-02T09:00:00-05:00",
        "date": WEDNESDAY,
        "time": "09:00",
        "staff_member_id": str(clinic.staff["Dr. Ada Lee"]),
        "staff_name": "Dr. Ada Lee",
    }


async def test_buffers_before_and_after_each_appointment(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A 10:00 appointment with 10 min before and 15 min after blocks 9:30, 10:00 and 10:30."""
    moss = await add_staff(db, clinic, "Rita Moss", before=10, after=15)
    await add_hours(db, moss, [3], time(9), time(12))
    await add_appointment(db, moss, date(2026, 12, 2), time(10))
    result = await check(client, clock, staff_name="Rita Moss")
    # 9:00 ends at 9:30, plus 15 after and 10 before the 10:00 visit = 9:55 <= 10:00: free.
    # 11:30 runs to 12:00; its after-buffer may run past the end of the shift.
    assert times(result) == ["09:00", "11:00", "11:30"]


async def test_buffers_keep_consecutive_appointments_apart(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """With 20 min after each visit, a visit ending at 10:00 blocks a 10:00 start, not 10:30."""
    moss = await add_staff(db, clinic, "Rita Moss", after=20)
    await add_hours(db, moss, [3], time(9), time(11))
    await add_appointment(db, moss, date(2026, 12, 2), time(9, 30))
    result = await check(client, clock, staff_name="Rita Moss")
    assert times(result) == ["10:30"]


async def test_full_day_time_off_removes_the_day(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A full day off covering Wednesday leaves Dr. Lee no slots, and says so."""
    await add_time_off(db, clinic.staff["Dr. Ada Lee"], date(2026, 12, 1), date(2026, 12, 3))
    result = await check(client, clock, staff_name="lee")
    assert result["ok"] is True
    assert result["available"] is False
    assert result["slots"] == []
    assert result["message"] == (
        "I don't have any openings on Wednesday, December 2 with Dr. Ada Lee. "
        "Would another day work?"
    )


async def test_partial_time_off_is_busy_time(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Time off from 10:15 to 11:00 removes every slot that overlaps it, on each day of it."""
    await add_time_off(
        db,
        clinic.staff["Dr. Ada Lee"],
        date(2026, 12, 2),
        date(2026, 12, 3),
        from_time=time(10, 15),
        to_time=time(11),
    )
    result = await check(client, clock, staff_name="Dr. Lee", days=2)
    expected = [t for t in LEE_WEDNESDAY if t not in ("10:00", "10:30")]
    assert [(s["date"], s["time"]) for s in result["slots"]] == [
        (d, t) for d in ("2026-12-02", "2026-12-03") for t in expected
    ]


async def test_business_hours_cut_the_working_windows(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """Business hours of 10:00-12:30 and 14:00-15:00 cut Dr. Lee's 9-17 day with its break."""
    hours = {
        "wednesday": [{"open": "10:00", "close": "12:30"}, {"open": "14:00", "close": "15:00"}]
    }
    await create_clinic(db, business_hours=hours)
    result = await check(client, clock, staff_name="Dr. Lee")
    assert times(result) == ["10:00", "10:30", "11:00", "11:30", "14:00", "14:30"]


async def test_weekday_missing_from_business_hours_is_closed(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """A weekday absent from business_hours (or with an empty list) has no slots at all."""
    await create_clinic(db, business_hours={"monday": [{"open": "08:00", "close": "17:00"}]})
    result = await check(client, clock, days=2)
    assert result["ok"] is True
    assert result["slots"] == []
    await create_clinic(
        db, agent_id="agent_empty_list", business_hours={"wednesday": []}, with_staff=True
    )
    result = await call(
        client,
        clock,
        "check_availability",
        {"date": WEDNESDAY},
        agent_id="agent_empty_list",
    )
    assert result["slots"] == []


async def test_null_business_hours_means_no_restriction(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """With business_hours null, a shift from 06:00 to 07:00 is offered in full."""
    clinic = await create_clinic(db, business_hours=None, with_staff=False)
    early = await add_staff(db, clinic, "Nina Early")
    await add_hours(db, early, [3], time(6), time(7))
    result = await check(client, clock)
    assert times(result) == ["06:00", "06:30"]


async def test_business_hours_closing_at_midnight(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """A clinic open until 24:00 offers a late shift up to its last half hour."""
    hours = {"wednesday": [{"open": "22:00", "close": "24:00"}]}
    clinic = await create_clinic(db, business_hours=hours, with_staff=False)
    late = await add_staff(db, clinic, "Leo Late")
    await add_clock_hours(db, late, 3, "21:00", "24:00")
    result = await check(client, clock)
    assert times(result) == ["22:00", "22:30", "23:00", "23:30"]
    assert result["slots"][-1]["start"] == "2026-12-02T23:30:00-05:00"


async def test_minimum_notice(client: httpx.AsyncClient, clock: Clock, clinic: Clinic) -> None:
    """At 9:10 with 60 minutes' notice, the first slot offered today is 10:30."""
    clock.now = datetime(2026, 12, 2, 14, 10, tzinfo=UTC)
    result = await check(client, clock, staff_name="Dr. Lee")
    assert times(result)[0] == "10:30"
    clock.now = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    result = await check(client, clock, staff_name="Dr. Lee")
    assert times(result)[0] == "10:00"


async def test_minimum_notice_follows_the_setting(
    make_app: Any, clock: Clock, clinic: Clinic
) -> None:
    """MIN_NOTICE_MINUTES = 0 offers 9:30 at 9:30 itself."""
    app = make_app(min_notice_minutes=0)
    clock.now = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            result = await check(c, clock, staff_name="Dr. Lee")
    assert times(result)[0] == "09:30"


async def test_time_preference_boundaries(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """Morning ends before 12:00, afternoon is 12:00 up to 17:00, evening starts at 17:00."""
    clinic = await create_clinic(db, business_hours=None, with_staff=False)
    moss = await add_staff(db, clinic, "Rita Moss", duration=60)
    await add_hours(db, moss, [3], time(10), time(19))
    expected = {
        "morning": ["10:00", "11:00"],
        "afternoon": ["12:00", "13:00", "14:00", "15:00", "16:00"],
        "evening": ["17:00", "18:00"],
        "any": ["10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00", "17:00", "18:00"],
    }
    for preference, wanted in expected.items():
        result = await check(client, clock, time_preference=preference)
        assert times(result) == wanted, preference
    result = await check(client, clock, time_preference="evening", date="2026-12-03")
    assert result["message"] == (
        "I don't have any openings in the evening on Thursday, December 3. Would another day work?"
    )


async def test_several_staff_ordered_by_start_then_name(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """Slots of all dentists come ordered by start, then by staff name."""
    result = await check(client, clock, staff_role="dentist", max_slots=5)
    assert [(s["time"], s["staff_name"]) for s in result["slots"]] == [
        ("08:00", "Dr. Omar Haddad"),
        ("08:30", "Dr. Omar Haddad"),
        ("09:00", "Dr. Ada Lee"),
        ("09:00", "Dr. Omar Haddad"),
        ("09:30", "Dr. Ada Lee"),
    ]
    assert result["message"] == (
        "I have 8:00 AM and 8:30 AM with Dr. Omar Haddad or 9:00 AM with Dr. Ada Lee on "
        "Wednesday, December 2. I have more times if none of those suit."
    )


async def test_duration_overrides_the_staff_default(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """Sam Park's grid steps by his 45 minutes, or by duration_minutes when given."""
    result = await check(client, clock, staff_name="Sam", max_slots=3)
    assert times(result) == ["09:00", "09:45", "10:30"]
    result = await check(client, clock, staff_name="Sam", duration_minutes=120)
    assert times(result) == ["09:00", "11:00", "13:00", "15:00"]  # 15:00-17:00 still fits


async def test_days_window_and_max_slots(
    client: httpx.AsyncClient, clock: Clock, clinic: Clinic
) -> None:
    """days=4 from Friday covers Friday to Monday; max_slots keeps the earliest ones."""
    result = await check(client, clock, date="2026-12-04", days=4, staff_name="Dr. Lee")
    assert {s["date"] for s in result["slots"]} == {"2026-12-04", "2026-12-07"}
    assert len(result["slots"]) == 28
    result = await check(client, clock, days=3, staff_name="Dr. Lee", max_slots=15)
    assert [(s["date"], s["time"]) for s in result["slots"]][-2:] == [
        ("2026-12-02", "16:30"),
        ("2026-12-03", "09:00"),
    ]
    result = await call(client, clock, "check_availability", {"date": WEDNESDAY})
    assert len(result["slots"]) == 12  # the default max_slots


OUT_OF_RANGE_ARGUMENTS_ARE_REFUSED_CASES: list[tuple[dict[str, Any], str]] = [
    ({"days": 0}, "1 to 31 days"),
    ({"days": 32}, "1 to 31 days"),
    ({"days": "seven"}, "1 to 31 days"),
    ({"max_slots": 0}, "1 to 100"),
    ({"max_slots": 101}, "1 to 100"),
    ({"duration_minutes": 2}, "between 5 and 480 minutes"),
    ({"time_preference": "night"}, "morning, afternoon or evening"),
    ({"staff_member_id": "dr-lee"}, "name"),
]


async def test_out_of_range_arguments_are_refused(
    client: httpx.AsyncClient,
    clock: Clock,
    clinic: Clinic,
) -> None:
    """Numbers out of range and malformed values are refusals with a sentence, not clamped."""
    for args, words in OUT_OF_RANGE_ARGUMENTS_ARE_REFUSED_CASES:
        result = await call(client, clock, "check_availability", {"date": WEDNESDAY, **args})
        assert result["ok"] is False
        assert result["slots"] == []
        assert result["available"] is False
        assert words in result["message"]


async def test_staff_role(client: httpx.AsyncClient, clock: Clock, clinic: Clinic) -> None:
    """staff_role picks the hygienist (singular or plural, any case); an unknown role lists ours."""
    for role in ("hygienist", "Hygienists"):
        result = await check(client, clock, staff_role=role)
        assert {s["staff_name"] for s in result["slots"]} == {"Sam Park"}
    result = await check(client, clock, staff_role="surgeon")
    assert result["ok"] is False
    assert result["reason"] == "unknown_role"
    assert sorted(result["choices"]) == ["dentist", "hygienist"]
    assert result["message"] == (
        "We don't have anyone with that role; our team includes dentist or hygienist."
    )


async def test_inactive_and_unbookable_staff_are_never_offered(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Only active, bookable staff members have slots."""
    for staff in (
        await add_staff(db, clinic, "Ivy Gone", active=False),
        await add_staff(db, clinic, "Max Desk", bookable=False),
    ):
        await add_hours(db, staff, [3], time(7), time(8))
    result = await check(client, clock)
    assert {s["staff_name"] for s in result["slots"]} == {
        "Dr. Ada Lee",
        "Dr. Omar Haddad",
        "Sam Park",
    }


async def night_clinic(conn: asyncpg.Connection, duration: int = 60) -> uuid.UUID:
    """A clinic with no business-hours restriction and a staff member on Sundays 00:00-24:00."""
    clinic = await create_clinic(conn, business_hours=None, with_staff=False)
    owl = await add_staff(conn, clinic, "Olive Owl", duration=duration)
    await add_clock_hours(conn, owl, 0, "00:00", "24:00")
    return owl


async def test_spring_forward_skips_the_missing_hour(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """On 2027-03-14 in New York, 02:00-02:59 does not exist: never offered; offsets change."""
    clock.now = datetime(2027, 3, 10, 12, tzinfo=UTC)
    await night_clinic(db)
    result = await check(client, clock, date="2027-03-14")
    starts = [s["start"] for s in result["slots"]]
    assert len(starts) == 23
    assert starts[:4] == [
        "2027-03-14T00:00:00-05:00",
        "2027-03-14T01:00:00-05:00",
        "2027-03-14T03:00:00-04:00",
        "2027-03-14T04:00:00-04:00",
    ]
    assert starts[-1] == "2027-03-14T23:00:00-04:00"
    assert "02:00" not in times(result)


async def test_spring_forward_durations_are_real_minutes(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """A 90-minute visit from 01:00 EST on spring-forward day ends at 03:30 EDT, not 02:30."""
    clock.now = datetime(2027, 3, 10, 12, tzinfo=UTC)
    owl = await night_clinic(db, duration=30)
    await add_appointment(db, owl, date(2027, 3, 14), time(1), duration=90)
    result = await check(client, clock, date="2027-03-14", max_slots=4)
    assert [s["start"] for s in result["slots"]] == [
        "2027-03-14T00:00:00-05:00",
        "2027-03-14T00:30:00-05:00",
        "2027-03-14T03:30:00-04:00",
        "2027-03-14T04:00:00-04:00",
    ]


async def test_fall_back_offers_the_repeated_hour_once(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """On 2026-11-01 in New York, 01:00-01:59 happens twice: offered once, at -04:00."""
    clock.now = datetime(2026, 10, 28, 12, tzinfo=UTC)
    await night_clinic(db, duration=30)
    result = await check(client, clock, date="2026-11-01")
    starts = [s["start"] for s in result["slots"]]
    assert len(starts) == 48
    assert starts[1:6] == [
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]
    assert times(result).count("01:00") == 1


async def test_fall_back_durations_are_real_minutes(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """On fall-back day a 60-minute visit at 01:30 EDT ends at 01:30 EST: 02:00 stays free."""
    clock.now = datetime(2026, 10, 28, 12, tzinfo=UTC)
    owl = await night_clinic(db, duration=30)
    await add_appointment(db, owl, date(2026, 11, 1), time(1, 30), duration=60)
    result = await check(client, clock, date="2026-11-01", max_slots=5)
    assert [s["start"] for s in result["slots"]] == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]


@dataclass(frozen=True)
class ClockChange:
    """A Sunday on which the clocks change in `zone`, and the wall-clock hour that happens
    twice that day (fall back) or not at all (spring forward)."""

    zone: str
    day: date
    hour: int


FALL_BACK = [
    ClockChange("America/New_York", date(2027, 11, 7), 1),
    ClockChange("Europe/Berlin", date(2027, 10, 31), 2),
]
SPRING_FORWARD = [
    ClockChange("America/New_York", date(2027, 3, 14), 2),
    ClockChange("Europe/Berlin", date(2027, 3, 28), 2),
]


def _on_the_day(clock: Clock, change: ClockChange) -> ClockChange:
    # Noon UTC four days before: the whole day is bookable, whatever today is.
    clock.now = datetime.combine(change.day, time(12), UTC) - timedelta(days=4)
    return change


@pytest.fixture(params=FALL_BACK, ids=lambda c: c.zone)
def fall_back(request: pytest.FixtureRequest, clock: Clock) -> ClockChange:
    """A fall-back day, with the app's clock a few days before it."""
    return _on_the_day(clock, request.param)


@pytest.fixture(params=SPRING_FORWARD, ids=lambda c: c.zone)
def spring_forward(request: pytest.FixtureRequest, clock: Clock) -> ClockChange:
    """A spring-forward day, with the app's clock a few days before it."""
    return _on_the_day(clock, request.param)


async def sunday_staff(
    conn: asyncpg.Connection, zone: str, start: time, end: time | str, *, duration: int = 30
) -> uuid.UUID:
    """A clinic in `zone` without business hours, one staff member on Sundays start-end."""
    clinic = await create_clinic(conn, timezone=zone, business_hours=None, with_staff=False)
    owl = await add_staff(conn, clinic, "Olive Owl", duration=duration)
    await add_clock_hours(conn, owl, 0, hhmm(start), end if isinstance(end, str) else hhmm(end))
    return owl


def hhmm(clock: time) -> str:
    return clock.strftime("%H:%M")


async def book_at(
    client: httpx.AsyncClient, clock: Clock, day: date, at: time, **args: Any
) -> dict[str, Any]:
    """Maria Gonzalez's booking on `day` at `at`, with anyone free unless `args` name someone."""
    wanted = {"patient_name": "Maria Gonzalez", "date": day.isoformat(), "time": hhmm(at), **args}
    return await call(client, clock, "book_appointment", wanted)


async def test_time_off_over_the_repeated_hour_covers_it(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, fall_back: ClockChange
) -> None:
    """Time off over the hour that repeats on fall-back day: neither offered nor bookable."""
    day, hour = fall_back.day, fall_back.hour
    owl = await sunday_staff(db, fall_back.zone, time(0), "24:00")
    await add_time_off(db, owl, day, day, from_time=time(hour), to_time=time(hour + 1))
    offered = times(await check(client, clock, date=day.isoformat()))
    assert hhmm(time(hour)) not in offered
    assert hhmm(time(hour, 30)) not in offered
    assert {hhmm(time(hour - 1, 30)), hhmm(time(hour + 1))} <= set(offered)
    for wanted in (time(hour), time(hour, 30)):
        result = await book_at(client, clock, day, wanted)
        assert result["booked"] is False, result
        assert result["reason"] == "taken"
    assert await db.fetchval("select count(*) from appointments") == 0


async def test_time_off_from_inside_the_skipped_hour_starts_when_the_clock_jumps(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, spring_forward: ClockChange
) -> None:
    """Off 02:30-03:30 on spring-forward day: busy from the jump to 03:30; 03:00 not offered."""
    day, hour = spring_forward.day, spring_forward.hour
    owl = await sunday_staff(db, spring_forward.zone, time(0), "24:00")
    await add_time_off(db, owl, day, day, from_time=time(hour, 30), to_time=time(hour + 1, 30))
    offered = times(await check(client, clock, date=day.isoformat()))
    assert hhmm(time(hour + 1)) not in offered
    assert {hhmm(time(hour - 1, 30)), hhmm(time(hour + 1, 30))} <= set(offered)
    result = await book_at(client, clock, day, time(hour + 1))
    assert result["booked"] is False
    assert result["reason"] == "taken"
    assert hhmm(time(hour + 1)) not in [s["time"] for s in result["alternatives"]]


async def test_a_fall_back_window_offers_what_booking_accepts(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, fall_back: ClockChange
) -> None:
    """A two-hour window over the repeated hour holds three real hours: 150 minutes fit."""
    day, opens = fall_back.day, time(fall_back.hour - 1)
    await sunday_staff(db, fall_back.zone, opens, time(fall_back.hour + 1), duration=150)
    result = await check(client, clock, date=day.isoformat())
    assert [s["time"] for s in result["slots"]] == [hhmm(opens)]
    booked = await book_at(client, clock, day, opens)
    assert booked["booked"] is True
    assert booked["start"] == result["slots"][0]["start"]


async def test_a_spring_forward_window_refuses_what_it_does_not_offer(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, spring_forward: ClockChange
) -> None:
    """Four wall-clock hours over the skipped one hold three real hours: 240 minutes don't fit."""
    day, opens = spring_forward.day, time(spring_forward.hour - 2)
    await sunday_staff(db, spring_forward.zone, opens, time(spring_forward.hour + 2), duration=240)
    result = await check(client, clock, date=day.isoformat())
    assert result["slots"] == []
    refused = await book_at(client, clock, day, opens)
    assert refused["booked"] is False
    assert refused["reason"] == "outside_hours"

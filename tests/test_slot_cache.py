"""check_availability's remembered days (slot_cache): used while current, never once stale."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import httpx
import pytest

from tests.calls import MONDAY_MORNING, WEDNESDAY, call
from tests.conftest import Clock
from tests.factories import Clinic, add_appointment
from tests.test_availability import LEE_WEDNESDAY, check, times

WED = date(2026, 12, 2)


class Rollback(Exception):
    """Raised to leave a transaction block without committing."""


LEE = "Dr. Ada Lee"


@pytest.fixture(autouse=True)
def monday_morning(clock: Clock) -> None:
    clock.now = MONDAY_MORNING


async def lee_times(client: httpx.AsyncClient, clock: Clock) -> list[str]:
    result = await check(client, clock, staff_name="Dr. Lee")
    assert result["ok"] is True, result
    return times(result)


async def remembered(db: asyncpg.Connection, staff_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "select local_date, duration_key, version, local_times from slot_cache.days"
        " where staff_member_id = $1 order by local_date, duration_key",
        staff_id,
    )
    return rows


async def stored_versions(db: asyncpg.Connection) -> dict[uuid.UUID, int]:
    """Each staff member's stored version (one stored day each in the tests that use it)."""
    return {
        r["staff_member_id"]: r["version"]
        for r in await db.fetch("select staff_member_id, version from slot_cache.days")
    }


async def test_a_checked_day_is_remembered_and_read_back(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """The first check stores the day; the next one answers from the stored row."""
    lee = clinic.staff[LEE]
    assert await lee_times(client, clock) == LEE_WEDNESDAY
    rows = await remembered(db, lee)
    assert [(r["local_date"], r["duration_key"]) for r in rows] == [(WED, 0)]
    assert [t.strftime("%H:%M") for t in rows[0]["local_times"]] == LEE_WEDNESDAY

    # Proof that the row is what answers: keep only its first two slots (same version).
    await db.execute(
        "update slot_cache.days set local_times = local_times[1:2], starts = starts[1:2],"
        " answers = answers[1:2]"
        " where staff_member_id = $1",
        lee,
    )
    assert await lee_times(client, clock) == ["09:00", "09:30"]


async def test_a_day_with_no_slots_is_remembered_too(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A closed day is stored as empty, so asking again does not compute it again."""
    result = await check(client, clock, staff_name="Dr. Lee", date="2026-12-05")  # a Saturday
    assert result["slots"] == []
    rows = await remembered(db, clinic.staff[LEE])
    assert [(r["local_date"], r["local_times"]) for r in rows] == [(date(2026, 12, 5), [])]


async def test_each_duration_is_its_own_day(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    result = await check(client, clock, staff_name="Dr. Lee", duration_minutes=60)
    assert times(result) == ["09:00", "10:00", "11:00", "13:00", "14:00", "15:00", "16:00"]
    assert await lee_times(client, clock) == LEE_WEDNESDAY
    rows = await remembered(db, clinic.staff[LEE])
    assert [(r["local_date"], r["duration_key"]) for r in rows] == [(WED, 0), (WED, 60)]


async def test_minimum_notice_applies_when_read_not_when_stored(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """One stored Wednesday answers 10:05 and 13:10 differently: an hour's notice from each."""
    clock.now = datetime(2026, 12, 2, 15, 5, tzinfo=UTC)  # 10:05 in Boston
    assert (await lee_times(client, clock))[0] == "11:30"
    clock.now = datetime(2026, 12, 2, 18, 10, tzinfo=UTC)  # 13:10
    assert (await lee_times(client, clock))[0] == "14:30"
    assert len(await remembered(db, clinic.staff[LEE])) == 1


async def _appointment_at_ten(db: asyncpg.Connection, clinic: Clinic) -> uuid.UUID:
    return await add_appointment(db, clinic.staff[LEE], WED, time(10))


WITHOUT_TEN = [t for t in LEE_WEDNESDAY if t != "10:00"]

# (what changes, SQL run after the first check with $1 = Dr. Lee's id, expected times after).
# Each runs after an appointment at 10:00 already exists (so the first check lacks 10:00).
CHANGES: list[tuple[str, str, list[str]]] = [
    (
        "a new appointment",
        "insert into appointments (staff_member_id, patient_name, patient_phone,"
        " appointment_date, appointment_time, duration_minutes)"
        " values ($1, 'Ann Lowe', '+16175550111', '2026-12-02', '14:00', 30)",
        [t for t in WITHOUT_TEN if t != "14:00"],
    ),
    (
        "an appointment cancelled",
        "update appointments set status = 'cancelled' where staff_member_id = $1",
        LEE_WEDNESDAY,
    ),
    (
        "an appointment moved",
        "update appointments set appointment_time = '15:00' where staff_member_id = $1",
        [t for t in LEE_WEDNESDAY if t != "15:00"],
    ),
    (
        "an appointment deleted",
        "delete from appointments where staff_member_id = $1",
        LEE_WEDNESDAY,
    ),
    (
        "appointments truncated",
        "truncate appointments",
        LEE_WEDNESDAY,
    ),
    (
        "shorter working hours",
        "update staff_availability set end_time = '15:00' where staff_member_id = $1",
        [t for t in WITHOUT_TEN if t < "15:00"],
    ),
    (
        "working hours removed",
        "delete from staff_availability where staff_member_id = $1 and day_of_week = 3",
        [],
    ),
    (
        "a day off",
        "insert into staff_time_off (staff_member_id, start_date, end_date, is_full_day)"
        " values ($1, '2026-12-02', '2026-12-02', true)",
        [],
    ),
    (
        "an afternoon off",
        "insert into staff_time_off (staff_member_id, start_date, end_date, start_time,"
        " end_time, is_full_day) values ($1, '2026-12-02', '2026-12-02', '13:00', '17:00', false)",
        [t for t in WITHOUT_TEN if t < "12:00"],
    ),
    (
        "a longer default visit",
        "update staff_members set default_appointment_duration = 60 where id = $1",
        ["09:00", "11:00", "13:00", "14:00", "15:00", "16:00"],
    ),
    (
        "a buffer after each visit",
        "update staff_members set buffer_time_after = 30 where id = $1",
        [t for t in LEE_WEDNESDAY if t not in ("09:30", "10:00", "10:30")],
    ),
    (
        "shorter business hours",
        "update agent_configurations set business_hours ="
        """ business_hours || '{"wednesday": [{"open": "09:00", "close": "11:00"}]}'"""
        " where id = (select agent_configuration_id from staff_members where id = $1)",
        ["09:00", "09:30", "10:30"],
    ),
]


@pytest.mark.parametrize(("change", "sql", "expected"), CHANGES, ids=[c[0] for c in CHANGES])
async def test_any_change_to_what_a_day_depends_on_is_seen_at_once(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
    change: str,
    sql: str,
    expected: list[str],
) -> None:
    await _appointment_at_ten(db, clinic)
    assert await lee_times(client, clock) == WITHOUT_TEN
    if "$1" in sql:
        await db.execute(sql, clinic.staff[LEE])
    else:
        await db.execute(sql)
    assert await lee_times(client, clock) == expected, change


async def test_a_new_zone_moves_every_remembered_instant(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    first = await check(client, clock, staff_name="Dr. Lee")
    assert first["slots"][0]["start"] == "2026-12-02T09:00:00-05:00"
    await db.execute(
        "update agent_configurations set timezone = 'America/Chicago' where id = $1",
        clinic.configuration_id,
    )
    again = await check(client, clock, staff_name="Dr. Lee")
    assert again["timezone"] == "America/Chicago"
    assert again["slots"][0]["start"] == "2026-12-02T09:00:00-06:00"


async def test_a_day_computed_before_a_booking_committed_is_never_used(
    client: httpx.AsyncClient,
    clock: Clock,
    db: asyncpg.Connection,
    clinic: Clinic,
    database_url: str,
) -> None:
    """The race versions exist for: a check computes Wednesday from a snapshot taken before a
    booking committed, and stores it after. The stored day carries the version it was computed
    at, so the next check recomputes instead of offering the booked time."""
    lee = clinic.staff[LEE]
    late = await asyncpg.connect(database_url)
    try:
        transaction = late.transaction(isolation="repeatable_read")
        await transaction.start()
        await late.fetchval("select count(*) from appointments")  # the snapshot is taken here
        await _appointment_at_ten(db, clinic)
        await late.execute(
            "select slot_cache.fill($1, array[$2::uuid], $3, $3, null, $3)",
            clinic.configuration_id,
            lee,
            WED,
        )
        await transaction.commit()
    finally:
        await late.close()
    stale = await remembered(db, lee)
    assert "10:00" in [t.strftime("%H:%M") for t in stale[0]["local_times"]]
    assert await lee_times(client, clock) == WITHOUT_TEN


async def test_concurrent_bookings_and_checks_end_consistent(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Ten bookings of Dr. Lee's Wednesday race ten checks of it; afterwards the day offers
    exactly the times nobody booked, and a booked time is never offered."""
    wanted = LEE_WEDNESDAY[::2][:7]

    async def book(i: int, at: str) -> dict[str, Any]:
        return await call(
            client,
            clock,
            "book_appointment",
            {
                "patient_name": f"Patient {i}",
                "patient_phone": f"+1617555{i:04d}",
                "date": WEDNESDAY,
                "time": at,
                "staff_name": "Dr. Lee",
            },
            call_id=f"call_cache_{i}",
        )

    results = await asyncio.gather(
        *(book(i, at) for i, at in enumerate(wanted)),
        *(lee_times(client, clock) for _ in range(10)),
    )
    assert all(r["booked"] is True for r in results[: len(wanted)])
    assert await lee_times(client, clock) == [t for t in LEE_WEDNESDAY if t not in wanted]
    booked = await db.fetch(
        "select to_char(appointment_time, 'HH24:MI') as t from appointments"
        " where staff_member_id = $1 order by 1",
        clinic.staff[LEE],
    )
    assert [r["t"] for r in booked] == wanted


async def test_the_cache_is_the_owners_alone(db: asyncpg.Connection) -> None:
    """Unlogged (no WAL to flush), outside `public`, row level security on, no grants."""
    rows = await db.fetch(
        "select c.relname, c.relpersistence::text, c.relrowsecurity,"
        " has_table_privilege('authenticated', c.oid, 'select') as readable"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'slot_cache' and c.relkind = 'r' order by 1"
    )
    assert [tuple(r) for r in rows] == [
        ("days", "u", True, False),
        ("staff_versions", "u", True, False),
    ]


async def test_a_booking_recomputes_only_its_staff_members_days(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """After a booking with Dr. Lee, the next check recomputes her Wednesday and reads the
    other staff members' stored days as they were."""
    first = await check(client, clock)
    assert first["ok"] is True
    before = await stored_versions(db)
    assert set(before) == set(clinic.staff.values())
    await _appointment_at_ten(db, clinic)
    again = await check(client, clock)
    after = await stored_versions(db)
    lee = clinic.staff[LEE]
    assert after[lee] > before[lee]
    assert {k: v for k, v in after.items() if k != lee} == {
        k: v for k, v in before.items() if k != lee
    }
    offered = {(s["staff_name"], s["time"]) for s in again["slots"]}
    assert (LEE, "10:00") not in offered
    assert offered == {(s["staff_name"], s["time"]) for s in first["slots"]} - {(LEE, "10:00")}


async def test_concurrent_checks_of_overlapping_weeks_all_answer(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Thirty checks at once over overlapping weeks (each filling several chunks of days)
    while appointments are added: every one answers, none deadlocks, and afterwards each day is
    stored once per staff member."""
    first_days = ["2026-12-01", "2026-12-02", "2026-12-03"]

    async def week(i: int) -> dict[str, Any]:
        return await check(client, clock, date=first_days[i % 3], days=7, max_slots=100)

    async def appointments() -> None:
        for i in range(3):
            await add_appointment(
                db, clinic.staff["Dr. Omar Haddad"], date(2026, 12, 7 + i), time(9)
            )

    results = await asyncio.gather(*(week(i) for i in range(30)), appointments())
    answers = [r for r in results if r is not None]
    assert len(answers) == 30
    assert all(a["ok"] is True and len(a["slots"]) == 100 for a in answers)
    duplicates = await db.fetchval(
        "select count(*) from (select staff_member_id, local_date from slot_cache.days"
        " group by 1, 2 having count(*) > 1) d"
    )
    assert duplicates == 0


async def test_stored_days_are_read_by_key_whatever_the_table_held_when_planned(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A session plans its statements once, possibly while the cache is empty; a plan that
    scanned the table then would scan all of it on every call later (12 s per check at 10,000
    stored days). Every read of slot_cache goes by key: no sequential scan, before or after
    the table fills."""

    async def check_in_database(on: date, duration: int | None) -> dict[str, Any]:
        args: dict[str, Any] = {"date": on.isoformat(), "days": 7}
        if duration is not None:
            args["duration_minutes"] = duration
        result: dict[str, Any] = await db.fetchval(
            "select rx_check_availability($1, '{}'::jsonb, $2::jsonb, $3, 60)",
            clinic.agent_id,
            args,
            MONDAY_MORNING,
        )
        return result

    scans = (
        "select relname, seq_scan, idx_scan from pg_stat_xact_user_tables"
        " where schemaname = 'slot_cache' order by relname"
    )
    with contextlib.suppress(Rollback):
        async with db.transaction():
            # This session's counts so far (not yet flushed ones included), to subtract.
            before = {r["relname"]: (r["seq_scan"], r["idx_scan"]) for r in await db.fetch(scans)}
            assert (await check_in_database(WED, None))["slots"]  # planned on an empty cache
            await db.execute(
                """
                insert into slot_cache.days (staff_member_id, duration_key, local_date, version,
                  staff_name, local_times, starts, answers)
                select gen_random_uuid(), 0, date '2026-12-01' + g % 300, 0, 'Someone', '{}', '{}',
                       '{}'
                from generate_series(1, 20000) g
                """
            )
            await db.execute(
                "insert into slot_cache.staff_versions"
                " select gen_random_uuid(), g from generate_series(1, 20000) g"
            )
            await add_appointment(db, clinic.staff[LEE], WED, time(10))
            for on, duration in ((WED, None), (WED, 45), (date(2026, 12, 3), None), (WED, None)):
                assert (await check_in_database(on, duration))["slots"]
            after = {r["relname"]: (r["seq_scan"], r["idx_scan"]) for r in await db.fetch(scans)}
            seq = {name: after[name][0] - before[name][0] for name in after}
            by_key = {name: after[name][1] - before[name][1] for name in after}
            assert seq == {"days": 0, "staff_versions": 0}
            assert all(n > 0 for n in by_key.values()), by_key
            raise Rollback  # leave nothing behind

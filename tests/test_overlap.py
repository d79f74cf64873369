"""Two non-cancelled appointments of one staff member never overlap, whoever writes them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, time, timedelta
from typing import Literal

import asyncpg
import pytest

from tests.factories import Clinic, add_appointment

DAY = date(2027, 3, 3)
WRITERS = 40
ROUNDS = 5

INSERT = """
insert into appointments (staff_member_id, patient_name, patient_phone, appointment_date,
  appointment_time, duration_minutes)
values ($1, $2, '+16175550187', $3, $4, $5)
"""


async def test_overlapping_insert_is_refused(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A plain INSERT overlapping a scheduled appointment fails with 23P01 and stores nothing."""
    lee = clinic.staff["Dr. Ada Lee"]
    await add_appointment(db, lee, DAY, time(9), duration=30)
    with pytest.raises(asyncpg.ExclusionViolationError) as raised:
        await add_appointment(db, lee, DAY, time(9, 15), duration=30, name="Tom Reyes")
    assert raised.value.sqlstate == "23P01"
    assert "already has an appointment" in str(raised.value)
    assert await db.fetchval("select count(*) from appointments") == 1


async def test_day_long_appointment_from_the_day_before_is_seen(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An appointment of the longest duration (1440 minutes) that started the day before still
    refuses a time inside its last minutes, with the same message; its end is free again."""
    lee = clinic.staff["Dr. Ada Lee"]
    await add_appointment(db, lee, DAY - timedelta(days=1), time(9, 30), duration=1440)
    with pytest.raises(asyncpg.ExclusionViolationError) as raised:
        await add_appointment(db, lee, DAY, time(9), duration=30, name="Tom Reyes")
    assert "already has an appointment" in str(raised.value)
    await add_appointment(db, lee, DAY, time(9, 30), duration=30, name="Tom Reyes")
    assert await db.fetchval("select count(*) from appointments") == 2


async def test_back_to_back_and_other_staff_are_allowed(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Touching intervals of one staff member, and the same time for another, are both fine."""
    lee = clinic.staff["Dr. Ada Lee"]
    await add_appointment(db, lee, DAY, time(9), duration=30)
    await add_appointment(db, lee, DAY, time(9, 30), duration=30)
    await add_appointment(db, clinic.staff["Dr. Omar Haddad"], DAY, time(9), duration=30)
    assert await db.fetchval("select count(*) from appointments") == 3


async def test_cancelled_appointment_may_overlap(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A cancelled appointment occupies nothing: a new one may take its time, and vice versa."""
    lee = clinic.staff["Dr. Ada Lee"]
    await add_appointment(db, lee, DAY, time(10), status="cancelled")
    await add_appointment(db, lee, DAY, time(10))
    await add_appointment(db, lee, DAY, time(10, 10), status="cancelled")
    assert await db.fetchval("select count(*) from appointments") == 3


async def test_update_into_overlap_is_refused(db: asyncpg.Connection, clinic: Clinic) -> None:
    """Moving an appointment onto another one, or un-cancelling into a taken time, fails."""
    lee = clinic.staff["Dr. Ada Lee"]
    await add_appointment(db, lee, DAY, time(9))
    later = await add_appointment(db, lee, DAY, time(11))
    cancelled = await add_appointment(db, lee, DAY, time(9, 10), status="cancelled")
    with pytest.raises(asyncpg.ExclusionViolationError):
        await db.execute("update appointments set appointment_time = '09:20' where id = $1", later)
    with pytest.raises(asyncpg.ExclusionViolationError):
        await db.execute(
            "update appointments set appointment_time = '08:00', duration_minutes = 90"
            " where id = $1",
            later,
        )
    with pytest.raises(asyncpg.ExclusionViolationError):
        await db.execute("update appointments set status = 'scheduled' where id = $1", cancelled)
    row = await db.fetchrow(
        "select appointment_time, duration_minutes from appointments where id = $1", later
    )
    assert row is not None
    assert (row["appointment_time"], row["duration_minutes"]) == (time(11), 30)


async def test_update_in_place_is_allowed(db: asyncpg.Connection, clinic: Clinic) -> None:
    """An appointment does not collide with itself when it is lengthened or shifted a little."""
    lee = clinic.staff["Dr. Ada Lee"]
    appointment = await add_appointment(db, lee, DAY, time(9))
    await db.execute(
        "update appointments set appointment_time = '09:10', duration_minutes = 45 where id = $1",
        appointment,
    )
    ends = await db.fetchval(
        "select ends_at - starts_at from appointments where id = $1", appointment
    )
    assert ends.total_seconds() == 45 * 60


@pytest.fixture
async def writers(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Forty separate connections, one per concurrent writer."""
    conns = await asyncio.gather(*(asyncpg.connect(database_url) for _ in range(WRITERS)))
    try:
        yield list(conns)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def _race(
    conns: list[asyncpg.Connection],
    staff_id: uuid.UUID,
    start: time,
    isolation: Literal["repeatable_read"] | None,
) -> list[BaseException | None]:
    """Every connection inserts an overlapping appointment at once; the outcome of each."""
    gate = asyncio.Event()

    async def one(conn: asyncpg.Connection, i: int) -> BaseException | None:
        await gate.wait()
        try:
            if isolation is None:
                await conn.execute(INSERT, staff_id, f"Patient {i}", DAY, start, 20 + i % 3 * 10)
            else:
                async with conn.transaction(isolation=isolation):
                    # The snapshot is taken here, before any competitor commits.
                    await conn.fetchval("select count(*) from appointments")
                    await conn.execute(
                        INSERT, staff_id, f"Patient {i}", DAY, start, 20 + i % 3 * 10
                    )
        except asyncpg.PostgresError as error:
            return error
        return None

    tasks = [asyncio.ensure_future(one(c, i)) for i, c in enumerate(conns)]
    await asyncio.sleep(0)
    gate.set()
    return list(await asyncio.gather(*tasks))


@pytest.mark.parametrize("isolation", [None, "repeatable_read"])
async def test_concurrent_inserts_leave_one_booking(
    db: asyncpg.Connection,
    clinic: Clinic,
    writers: list[asyncpg.Connection],
    isolation: Literal["repeatable_read"] | None,
) -> None:
    """40 concurrent overlapping inserts leave exactly one row per round, without deadlocks."""
    lee = clinic.staff["Dr. Ada Lee"]
    for round_ in range(ROUNDS):
        start = time(9 + round_)
        outcomes = await _race(writers, lee, start, isolation)
        errors = [e for e in outcomes if e is not None]
        codes = {e.sqlstate for e in errors if isinstance(e, asyncpg.PostgresError)}
        assert "40P01" not in codes, "deadlock detected"
        # Every loser is told "overlap" (23P01): under READ COMMITTED by the trigger after the
        # per-staff lock, under REPEATABLE READ (whose snapshot can't see the winner) by the
        # exclusion constraint.
        assert codes == {"23P01"}, [str(e) for e in errors]
        assert len(errors) == WRITERS - 1
        rows = await db.fetchval(
            "select count(*) from appointments where staff_member_id = $1"
            " and appointment_time = $2",
            lee,
            start,
        )
        assert rows == 1, f"round {round_}: {rows} rows"


async def test_overlapping_availability_written_at_once_keeps_one_row(
    db: asyncpg.Connection, clinic: Clinic, writers: list[asyncpg.Connection]
) -> None:
    """Forty connections adding overlapping Sunday hours for one staff member at once: one row
    is stored, every other writer is refused with the overlap message."""
    lee = clinic.staff["Dr. Ada Lee"]
    gate = asyncio.Event()

    async def one(conn: asyncpg.Connection, i: int) -> BaseException | None:
        await gate.wait()
        try:
            await conn.execute(
                "insert into staff_availability (staff_member_id, day_of_week, start_time,"
                " end_time) values ($1, 0, $2, '18:00')",
                lee,
                time(9, i % 30),
            )
        except asyncpg.PostgresError as error:
            return error
        return None

    tasks = [asyncio.ensure_future(one(c, i)) for i, c in enumerate(writers)]
    await asyncio.sleep(0)
    gate.set()
    errors = [e for e in await asyncio.gather(*tasks) if e is not None]
    assert len(errors) == WRITERS - 1
    assert all("overlaps another row" in str(e) for e in errors), {str(e) for e in errors}
    rows = await db.fetchval(
        "select count(*) from staff_availability where staff_member_id = $1 and day_of_week = 0",
        lee,
    )
    assert rows == 1

"""Rows for tests: a clinic with staff and hours, built with plain SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

import asyncpg

WEEKDAY_HOURS = {
    day: [{"open": "08:00", "close": "17:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
}
AGENT_ID = "agent_7c41e9b2d05a4f83b6e2c19d0a"


@dataclass
class Clinic:
    user_id: uuid.UUID
    configuration_id: uuid.UUID
    agent_id: str
    timezone: str
    staff: dict[str, uuid.UUID] = field(default_factory=dict)


async def create_user(conn: asyncpg.Connection) -> uuid.UUID:
    user_id: uuid.UUID = await conn.fetchval(
        "insert into auth.users (email) values ($1) returning id", f"{uuid.uuid4().hex}@test"
    )
    return user_id


async def create_clinic(
    conn: asyncpg.Connection,
    *,
    agent_id: str = AGENT_ID,
    timezone: str = "America/New_York",
    business_hours: Any = WEEKDAY_HOURS,
    with_staff: bool = True,
    **columns: Any,
) -> Clinic:
    """A clinic; with_staff adds Dr. Ada Lee, Dr. Omar Haddad and Sam Park on weekdays."""
    user_id = await create_user(conn)
    values: dict[str, Any] = {
        "user_id": user_id,
        "agent_id": agent_id,
        "agent_name": "Ava",
        "business_name": "Brightside Dental",
        "business_phone": "+16175550100",
        "business_address": "120 Boylston Street, Boston, MA",
        "timezone": timezone,
        "business_hours": business_hours,
        "forward_number": "+16175550142",
        "forward_enabled": True,
        "greeting_message": "Thank you for calling Brightside Dental.",
        **columns,
    }
    names = list(values)
    placeholders = ", ".join(
        f"${i}::jsonb" if n == "business_hours" or n == "voice_settings" else f"${i}"
        for i, n in enumerate(names, start=1)
    )
    configuration_id = await conn.fetchval(
        f"insert into agent_configurations ({', '.join(names)}) values ({placeholders})"  # noqa: S608
        " returning id",
        *values.values(),
    )
    clinic = Clinic(user_id, configuration_id, agent_id, timezone)
    if with_staff:
        lee = await add_staff(conn, clinic, "Dr. Ada Lee", role="dentist")
        await add_hours(conn, lee, range(1, 6), time(9), time(17), (time(12), time(13)))
        haddad = await add_staff(conn, clinic, "Dr. Omar Haddad", role="dentist")
        await add_hours(conn, haddad, range(1, 6), time(8), time(16))
        park = await add_staff(conn, clinic, "Sam Park", role="hygienist", duration=45)
        await add_hours(conn, park, range(1, 6), time(9), time(17))
    return clinic


async def add_staff(
    conn: asyncpg.Connection,
    clinic: Clinic,
    name: str,
    *,
    role: str | None = None,
    duration: int = 30,
    before: int = 0,
    after: int = 0,
    bookable: bool = True,
    active: bool = True,
) -> uuid.UUID:
    staff_id: uuid.UUID = await conn.fetchval(
        """
        insert into staff_members (user_id, agent_configuration_id, staff_name, staff_role,
          default_appointment_duration, buffer_time_before, buffer_time_after, is_bookable,
          is_active)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id
        """,
        clinic.user_id,
        clinic.configuration_id,
        name,
        role,
        duration,
        before,
        after,
        bookable,
        active,
    )
    clinic.staff[name] = staff_id
    return staff_id


async def add_hours(
    conn: asyncpg.Connection,
    staff_id: uuid.UUID,
    weekdays: Any,
    start: time,
    end: time,
    break_: tuple[time, time] | None = None,
) -> None:
    for day in weekdays:
        await conn.execute(
            """
            insert into staff_availability (staff_member_id, day_of_week, start_time, end_time,
              break_start_time, break_end_time)
            values ($1, $2, $3, $4, $5, $6)
            """,
            staff_id,
            day,
            start,
            end,
            break_[0] if break_ else None,
            break_[1] if break_ else None,
        )


async def add_time_off(
    conn: asyncpg.Connection,
    staff_id: uuid.UUID,
    start: date,
    end: date,
    *,
    from_time: time | None = None,
    to_time: time | None = None,
) -> None:
    await conn.execute(
        """
        insert into staff_time_off (staff_member_id, start_date, end_date, start_time, end_time,
          is_full_day, reason)
        values ($1, $2, $3, $4, $5, $6, 'other')
        """,
        staff_id,
        start,
        end,
        from_time,
        to_time,
        from_time is None,
    )


async def add_appointment(
    conn: asyncpg.Connection,
    staff_id: uuid.UUID,
    on: date,
    at: time,
    *,
    duration: int = 30,
    name: str = "Maria Gonzalez",
    phone: str = "+16175550187",
    status: str = "scheduled",
) -> uuid.UUID:
    appointment_id: uuid.UUID = await conn.fetchval(
        """
        insert into appointments (staff_member_id, patient_name, patient_phone, appointment_date,
          appointment_time, duration_minutes, status)
        values ($1, $2, $3, $4, $5, $6, $7) returning id
        """,
        staff_id,
        name,
        phone,
        on,
        at,
        duration,
        status,
    )
    return appointment_id

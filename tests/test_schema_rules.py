"""The schema's triggers: updated_at kept current, impossible rows rejected with a clear message."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest

from tests.factories import Clinic, add_appointment, create_clinic, create_user

DAY = date(2027, 3, 3)


@pytest.fixture
def db(rollback_db: asyncpg.Connection) -> asyncpg.Connection:
    """Every test here runs in a transaction that is rolled back (the clinic fixture included)."""
    return rollback_db


async def _rejects(db: asyncpg.Connection, sql: str, *args: Any, says: str) -> None:
    """The statement fails with check_violation (23514) and a message containing `says`."""
    with pytest.raises(asyncpg.CheckViolationError) as raised:
        async with db.transaction():
            await db.execute(sql, *args)
    assert raised.value.sqlstate == "23514"
    assert says in str(raised.value), str(raised.value)


# --- updated_at -------------------------------------------------------------------------------

UPDATED_AT_TABLES = {
    "agent_configurations": "update agent_configurations set agent_name = 'Zoe'",
    "staff_members": "update staff_members set staff_role = 'surgeon'",
    "staff_availability": "update staff_availability set is_active = false",
    "staff_time_off": "update staff_time_off set notes = 'moved'",
    "appointments": "update appointments set notes = 'bring x-rays'",
    "call_scripts": "update call_scripts set script_name = 'renamed'",
    "customer_call_logs": "update customer_call_logs set call_status = 'ended'",
    "profiles": "update profiles set full_name = 'Ada Lee'",
}


@pytest.mark.parametrize("table", sorted(UPDATED_AT_TABLES))
async def test_updated_at_moves_on_update(
    db: asyncpg.Connection, clinic: Clinic, table: str
) -> None:
    """Every table with updated_at gets it set to the updating transaction's time."""
    lee = clinic.staff["Dr. Ada Lee"]
    await db.execute(
        "insert into staff_time_off (staff_member_id, start_date, end_date) values ($1, $2, $2)",
        lee,
        DAY,
    )
    await add_appointment(db, lee, DAY, time(9))
    await db.execute(
        "insert into call_scripts (agent_configuration_id, script_name, script_type,"
        " script_content) values ($1, 'Hello', 'greeting', 'Hi there')",
        clinic.configuration_id,
    )
    await db.execute(
        "insert into customer_call_logs (retell_call_id, agent_configuration_id)"
        " values ('call_1', $1)",
        clinic.configuration_id,
    )
    await db.execute("insert into profiles (id) values ($1)", clinic.user_id)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    # The trigger runs on update only, so an explicit old value sticks until the next update.
    await db.execute(f"alter table {table} disable trigger {table}_updated_at")
    await db.execute(f"update {table} set updated_at = $1", old)  # noqa: S608
    await db.execute(f"alter table {table} enable trigger {table}_updated_at")
    async with db.transaction():
        await db.execute(UPDATED_AT_TABLES[table])
        now = await db.fetchval("select now()")
        stamps = await db.fetch(f"select updated_at from {table}")  # noqa: S608
    assert stamps
    assert {row["updated_at"] for row in stamps} == {now}
    # A writer cannot set it back by hand either.
    async with db.transaction():
        await db.execute(f"update {table} set updated_at = $1", old)  # noqa: S608
        stamps = await db.fetch(f"select updated_at from {table}")  # noqa: S608
    assert {row["updated_at"] for row in stamps} == {now}


async def test_every_updated_at_column_has_its_trigger(db: asyncpg.Connection) -> None:
    """Each public table with an updated_at column has a trigger keeping it current."""
    rows = await db.fetch(
        """
        select c.table_name,
               exists (select 1 from pg_trigger t
                       where t.tgrelid = format('public.%I', c.table_name)::regclass
                         and t.tgname = c.table_name || '_updated_at'
                         and not t.tgisinternal) as has_trigger
        from information_schema.columns c
        join information_schema.tables t
          on t.table_schema = c.table_schema and t.table_name = c.table_name
        where c.table_schema = 'public' and c.column_name = 'updated_at'
          and t.table_type = 'BASE TABLE'
        """
    )
    assert {r["table_name"] for r in rows} >= set(UPDATED_AT_TABLES)
    assert [r["table_name"] for r in rows if not r["has_trigger"]] == []


# --- agent_configurations ---------------------------------------------------------------------


async def _configure(db: asyncpg.Connection, **columns: Any) -> None:
    user = await create_user(db)
    values = {"user_id": user, "agent_id": f"agent_{uuid.uuid4().hex}", **columns}
    names = ["agent_name", "business_name", *values]
    placeholders = [f"${i}" for i in range(1, len(values) + 1)]
    placeholders = [
        f"{p}::jsonb" if n == "business_hours" else p
        for p, n in zip(placeholders, values, strict=True)
    ]
    await db.execute(
        f"insert into agent_configurations ({', '.join(names)})"  # noqa: S608
        f" values ('Ava', 'Clinic', {', '.join(placeholders)})",
        *values.values(),
    )


@pytest.mark.parametrize(
    ("hours", "says"),
    [
        (["09:00-17:00"], "must be an object"),
        ("open", "must be an object"),
        ({"Monday": [{"open": "09:00", "close": "17:00"}]}, "unknown weekday"),
        ({"mon": [{"open": "09:00", "close": "17:00"}]}, "unknown weekday"),
        ({"monday": {"open": "09:00", "close": "17:00"}}, "must be a list"),
        ({"monday": [{"open": "9am", "close": "17:00"}]}, "not HH:MM"),
        ({"monday": [{"open": "09:00", "close": "24:30"}]}, "not HH:MM"),
        ({"monday": [{"open": "09:00"}]}, 'need "open" and "close"'),
        ({"monday": [{"open": 9, "close": 17}]}, 'need "open" and "close"'),
        ({"monday": [{"open": "17:00", "close": "09:00"}]}, "closes before it opens"),
        ({"monday": [{"open": "09:00", "close": "09:00"}]}, "closes before it opens"),
        (
            {"monday": [{"open": "09:00", "close": "13:00"}, {"open": "12:00", "close": "17:00"}]},
            "overlapping intervals",
        ),
    ],
)
async def test_malformed_business_hours_rejected(
    db: asyncpg.Connection, hours: Any, says: str
) -> None:
    """business_hours must be {weekday: [{open, close}]} with HH:MM times that make sense."""
    user = await create_user(db)
    await _rejects(
        db,
        "insert into agent_configurations (user_id, agent_id, agent_name, business_name,"
        " business_hours) values ($1, 'agent_x', 'Ava', 'Clinic', $2::jsonb)",
        user,
        hours,
        says=says,
    )
    assert await db.fetchval("select count(*) from agent_configurations") == 0


@pytest.mark.parametrize(
    "hours",
    [
        None,
        {},
        {"monday": [{"open": "09:00", "close": "24:00"}]},
        {"friday": [{"open": "13:00", "close": "17:00"}, {"open": "08:00", "close": "12:00"}]},
        {"saturday": [], "sunday": None},
        {"monday": [{"open": "09:00", "close": "12:00"}, {"open": "12:00", "close": "17:30"}]},
    ],
)
async def test_wellformed_business_hours_accepted(db: asyncpg.Connection, hours: Any) -> None:
    """Null hours, closing at 24:00, unordered and touching intervals are all accepted."""
    await _configure(db, business_hours=hours)
    assert await db.fetchval("select business_hours from agent_configurations") == hours


@pytest.mark.parametrize("zone", ["Mars/Olympus", "New York", "XYZ+3", "+05:00", ""])
async def test_invalid_timezone_rejected(db: asyncpg.Connection, zone: str) -> None:
    """A timezone that is not an IANA zone name (Python's zoneinfo must load it) is refused."""
    user = await create_user(db)
    await _rejects(
        db,
        "insert into agent_configurations (user_id, agent_id, agent_name, business_name,"
        " timezone) values ($1, 'agent_x', 'Ava', 'Clinic', $2)",
        user,
        zone,
        says="IANA zone",
    )


async def test_iana_timezone_accepted(db: asyncpg.Connection) -> None:
    """An IANA zone name is stored as given."""
    await _configure(db, timezone="Europe/Berlin")
    assert await db.fetchval("select timezone from agent_configurations") == "Europe/Berlin"


@pytest.mark.parametrize("number", ["6175550142", "+1 617 555 0142", "+0175550142", "+1617"])
async def test_forward_number_must_be_e164(db: asyncpg.Connection, number: str) -> None:
    """forward_number is stored only in E.164 form."""
    user = await create_user(db)
    await _rejects(
        db,
        "insert into agent_configurations (user_id, agent_id, agent_name, business_name,"
        " forward_number) values ($1, 'agent_x', 'Ava', 'Clinic', $2)",
        user,
        number,
        says="E.164",
    )


@pytest.mark.parametrize("number", [None, "", "  "])
async def test_forward_enabled_before_the_number_is_typed(
    db: asyncpg.Connection, number: str | None
) -> None:
    """Forwarding may be switched on with no number yet; a blank number is stored as none."""
    user = await create_user(db)
    stored = await db.fetchrow(
        "insert into agent_configurations (user_id, agent_id, agent_name, business_name,"
        " forward_enabled, forward_number) values ($1, 'agent_x', 'Ava', 'Clinic', true, $2)"
        " returning forward_enabled, forward_number",
        user,
        number,
    )
    assert stored is not None
    assert (stored["forward_enabled"], stored["forward_number"]) == (True, None)


# --- staff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("default_appointment_duration", 0, "between 1 and 1440"),
        ("default_appointment_duration", -30, "between 1 and 1440"),
        ("buffer_time_before", -5, "must not be negative"),
        ("buffer_time_after", -1, "must not be negative"),
        ("buffer_time_after", 2000, "at most 1440"),
    ],
)
async def test_staff_durations_and_buffers_checked(
    db: asyncpg.Connection, clinic: Clinic, column: str, value: int, says: str
) -> None:
    """Durations must be positive and buffers non-negative, on insert and on update."""
    await _rejects(
        db,
        f"update staff_members set {column} = $1 where id = $2",  # noqa: S608
        value,
        clinic.staff["Dr. Ada Lee"],
        says=says,
    )
    await _rejects(
        db,
        f"insert into staff_members (agent_configuration_id, staff_name, {column})"  # noqa: S608
        " values ($1, 'Dr. New', $2)",
        clinic.configuration_id,
        value,
        says=says,
    )


async def test_staff_user_must_match_configuration_owner(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A staff member naming another user than its configuration's owner is refused."""
    stranger = await create_user(db)
    await _rejects(
        db,
        "insert into staff_members (user_id, agent_configuration_id, staff_name)"
        " values ($1, $2, 'Dr. Who')",
        stranger,
        clinic.configuration_id,
        says="must match its agent configuration",
    )
    # Omitted, the owner is filled in from the configuration.
    owner = await db.fetchval(
        "insert into staff_members (agent_configuration_id, staff_name) values ($1, 'Dr. New')"
        " returning user_id",
        clinic.configuration_id,
    )
    assert owner == clinic.user_id


# --- availability and time off ----------------------------------------------------------------

AVAILABILITY = (
    "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time,"
    " break_start_time, break_end_time) values ($1, $2, $3, $4, $5, $6)"
)


@pytest.mark.parametrize(
    ("day", "start", "end", "break_start", "break_end", "says"),
    [
        (7, time(9), time(17), None, None, "day_of_week must be 0 (Sunday) to 6"),
        (-1, time(9), time(17), None, None, "day_of_week must be 0 (Sunday) to 6"),
        (1, time(17), time(9), None, None, "end_time must be after start_time"),
        (1, time(9), time(9), None, None, "end_time must be after start_time"),
        (1, time(9), time(17), time(12), None, "needs both"),
        (1, time(9), time(17), None, time(13), "needs both"),
        (1, time(9), time(17), time(13), time(12), "break_end_time must be after"),
        (1, time(9), time(17), time(8), time(10), "inside the working hours"),
        (1, time(9), time(17), time(16), time(18), "inside the working hours"),
    ],
)
async def test_impossible_availability_rejected(
    db: asyncpg.Connection,
    clinic: Clinic,
    day: int,
    start: time,
    end: time,
    break_start: time | None,
    break_end: time | None,
    says: str,
) -> None:
    """Weekday outside 0-6, an end not after the start, or a bad break is refused."""
    lee = clinic.staff["Dr. Ada Lee"]
    before = await db.fetchval("select count(*) from staff_availability")
    await _rejects(db, AVAILABILITY, lee, day, start, end, break_start, break_end, says=says)
    assert await db.fetchval("select count(*) from staff_availability") == before


async def test_overlapping_availability_rejected(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A second active row over part of a staff member's weekday is refused, naming it; rows
    that touch, other weekdays and inactive rows are not, and activating one that overlaps is."""
    lee = clinic.staff["Dr. Ada Lee"]  # Monday to Friday 09:00-17:00
    for start, end in ((time(16), time(18)), (time(8), time(9, 30)), (time(10), time(11))):
        await _rejects(
            db,
            AVAILABILITY,
            lee,
            3,
            start,
            end,
            None,
            None,
            says=f"availability {start:%H:%M}-{end:%H:%M} overlaps another row",
        )
    await db.execute(AVAILABILITY, lee, 3, time(17), time(19), None, None)
    await db.execute(AVAILABILITY, lee, 6, time(10), time(12), None, None)
    spare = await db.fetchval(
        "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time,"
        " is_active) values ($1, 3, '10:00', '12:00', false) returning id",
        lee,
    )
    await _rejects(
        db,
        "update staff_availability set is_active = true where id = $1",
        spare,
        says="overlaps another row",
    )
    await _rejects(
        db,
        "update staff_availability set start_time = '16:30' where staff_member_id = $1"
        " and day_of_week = 3 and start_time = '17:00'",
        lee,
        says="overlaps another row",
    )


async def test_availability_cannot_start_at_2400(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A window starting at 24:00 (the end of the day) is empty and refused."""
    await _rejects(
        db,
        "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
        " values ($1, 1, '24:00', '24:00')",
        clinic.staff["Dr. Ada Lee"],
        says="start_time must be before 24:00",
    )


async def test_appointment_cannot_start_at_2400(db: asyncpg.Connection, clinic: Clinic) -> None:
    """An appointment time of 24:00 is refused rather than silently meaning the next day."""
    await _rejects(
        db,
        "insert into appointments (staff_member_id, patient_name, patient_phone,"
        " appointment_date, appointment_time) values ($1, 'Tom', '+16175550187', $2, '24:00')",
        clinic.staff["Dr. Ada Lee"],
        DAY,
        says="appointment_time must be before 24:00",
    )


async def test_availability_until_midnight_accepted(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A window may run to midnight, written 24:00 or 00:00 (stored as 24:00)."""
    lee = clinic.staff["Dr. Ada Lee"]
    await db.execute(
        "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
        " values ($1, 0, '18:00', '24:00'), ($1, 6, '18:00', '00:00')",
        lee,
    )
    ends = await db.fetch(
        "select end_time::text from staff_availability where day_of_week in (0, 6)"
    )
    assert [row["end_time"] for row in ends] == ["24:00:00", "24:00:00"]


@pytest.mark.parametrize(
    ("end_date", "full_day", "from_time", "to_time", "says"),
    [
        (DAY - timedelta(days=1), True, None, None, "end_date must not be before start_date"),
        (DAY, False, time(14), time(10), "end_time must be after start_time"),
        (DAY, False, time(10), time(10), "end_time must be after start_time"),
        (DAY, False, time(10), None, "needs start_time and end_time"),
        (DAY, False, None, None, "needs start_time and end_time"),
    ],
)
async def test_impossible_time_off_rejected(
    db: asyncpg.Connection,
    clinic: Clinic,
    end_date: date,
    full_day: bool,
    from_time: time | None,
    to_time: time | None,
    says: str,
) -> None:
    """Time off ending before it starts, or a partial day without both times, is refused."""
    await _rejects(
        db,
        "insert into staff_time_off (staff_member_id, start_date, end_date, start_time, end_time,"
        " is_full_day) values ($1, $2, $3, $4, $5, $6)",
        clinic.staff["Dr. Ada Lee"],
        DAY,
        end_date,
        from_time,
        to_time,
        full_day,
        says=says,
    )


# --- appointments -----------------------------------------------------------------------------


async def test_unknown_appointment_status_rejected(db: asyncpg.Connection, clinic: Clinic) -> None:
    """Only scheduled, confirmed, cancelled, completed and no_show are statuses."""
    with pytest.raises(asyncpg.CheckViolationError, match="unknown appointment status 'booked'"):
        async with db.transaction():
            await add_appointment(db, clinic.staff["Dr. Ada Lee"], DAY, time(9), status="booked")
    appointment = await add_appointment(db, clinic.staff["Dr. Ada Lee"], DAY, time(9))
    await _rejects(
        db,
        "update appointments set status = 'done' where id = $1",
        appointment,
        says="unknown appointment status",
    )
    for status in ("confirmed", "completed", "no_show", "cancelled"):
        await db.execute("update appointments set status = $1 where id = $2", status, appointment)


@pytest.mark.parametrize("minutes", [0, -15, 1441])
async def test_appointment_duration_checked(
    db: asyncpg.Connection, clinic: Clinic, minutes: int
) -> None:
    """An appointment lasts 1 to 1440 minutes."""
    with pytest.raises(asyncpg.CheckViolationError, match="duration_minutes"):
        async with db.transaction():
            await add_appointment(db, clinic.staff["Dr. Ada Lee"], DAY, time(9), duration=minutes)


async def test_appointment_user_must_match_staff_owner(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """An appointment naming another user than its staff member's owner is refused."""
    stranger = await create_user(db)
    await _rejects(
        db,
        "insert into appointments (user_id, staff_member_id, patient_name, patient_phone,"
        " appointment_date, appointment_time) values ($1, $2, 'Tom', '+16175550187', $3, '09:00')",
        stranger,
        clinic.staff["Dr. Ada Lee"],
        DAY,
        says="must match its staff member",
    )


@pytest.mark.parametrize(
    ("on", "at", "minutes", "starts", "ends"),
    [
        # Standard time: UTC-5.
        (date(2027, 1, 6), time(9), 30, "2027-01-06 14:00", "2027-01-06 14:30"),
        # Daylight time: UTC-4.
        (date(2027, 7, 7), time(9), 30, "2027-07-07 13:00", "2027-07-07 13:30"),
        # Fall back: 01:30 happens twice on 2026-11-01; the first (EDT) is meant.
        (date(2026, 11, 1), time(1, 30), 30, "2026-11-01 05:30", "2026-11-01 06:00"),
        (date(2026, 11, 1), time(1, 0), 90, "2026-11-01 05:00", "2026-11-01 06:30"),
        # Real minutes across the change: 00:30 EDT + 120 min = 01:30 EST.
        (date(2026, 11, 1), time(0, 30), 120, "2026-11-01 04:30", "2026-11-01 06:30"),
        # Spring forward: 01:30 EST + 60 min = 03:30 EDT.
        (date(2027, 3, 14), time(1, 30), 60, "2027-03-14 06:30", "2027-03-14 07:30"),
    ],
)
async def test_appointment_instants_derived_in_clinic_zone(
    db: asyncpg.Connection,
    clinic: Clinic,
    on: date,
    at: time,
    minutes: int,
    starts: str,
    ends: str,
) -> None:
    """starts_at/ends_at are the local date and time in America/New_York, first occurrence."""
    appointment = await add_appointment(db, clinic.staff["Dr. Ada Lee"], on, at, duration=minutes)
    row = await db.fetchrow(
        "select starts_at, ends_at from appointments where id = $1", appointment
    )
    assert row is not None
    assert row["starts_at"] == datetime.fromisoformat(starts).replace(tzinfo=UTC)
    assert row["ends_at"] == datetime.fromisoformat(ends).replace(tzinfo=UTC)


async def test_instants_follow_a_zone_change(db: asyncpg.Connection, clinic: Clinic) -> None:
    """Moving the clinic to another zone re-derives its appointments' instants."""
    appointment = await add_appointment(db, clinic.staff["Dr. Ada Lee"], date(2027, 1, 6), time(9))
    await db.execute(
        "update agent_configurations set timezone = 'America/Los_Angeles' where id = $1",
        clinic.configuration_id,
    )
    starts = await db.fetchval("select starts_at from appointments where id = $1", appointment)
    assert starts == datetime(2027, 1, 6, 17, tzinfo=UTC)


# --- voicemails -------------------------------------------------------------------------------

VOICEMAIL = (
    "insert into voicemails (agent_configuration_id, caller_phone, transcript, {column})"
    " values ($1, '+16175550187', 'Please call back', $2)"
)


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("priority", "critical", "unknown priority 'critical'"),
        ("message_type", "fax", "unknown message_type 'fax'"),
        ("status", "spam", "unknown voicemail status 'spam'"),
    ],
)
async def test_unknown_voicemail_values_rejected(
    db: asyncpg.Connection, clinic: Clinic, column: str, value: str, says: str
) -> None:
    """Voicemail priority, message_type and status accept only their documented values."""
    await _rejects(db, VOICEMAIL.format(column=column), clinic.configuration_id, value, says=says)
    assert await db.fetchval("select count(*) from voicemails") == 0


async def test_voicemail_negative_duration_rejected(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A recording cannot last a negative number of seconds."""
    await _rejects(
        db,
        VOICEMAIL.format(column="duration_seconds"),
        clinic.configuration_id,
        -3,
        says="duration_seconds must not be negative",
    )


async def test_voicemail_user_must_match_configuration_owner(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A voicemail naming another user than its configuration's owner is refused."""
    stranger = await create_user(db)
    await _rejects(
        db,
        VOICEMAIL.format(column="user_id"),
        clinic.configuration_id,
        stranger,
        says="must match its agent configuration",
    )


async def test_urgent_voicemail_is_consistent(db: asyncpg.Connection, clinic: Clinic) -> None:
    """priority urgent and is_urgent always agree, whichever one the writer set."""
    await db.execute(VOICEMAIL.format(column="priority"), clinic.configuration_id, "urgent")
    await db.execute(
        VOICEMAIL.format(column="is_urgent").replace("Please call back", "Call me"),
        clinic.configuration_id,
        True,
    )
    rows = await db.fetch("select priority, is_urgent from voicemails")
    assert {(r["priority"], r["is_urgent"]) for r in rows} == {("urgent", True)}


# --- call scripts -----------------------------------------------------------------------------

SCRIPT = (
    "insert into call_scripts (agent_configuration_id, user_id, script_name, script_type,"
    " script_content, conditions) values ($1, $2, 'Script', $3, 'Hello', $4::jsonb)"
)


async def test_unknown_script_type_rejected(db: asyncpg.Connection, clinic: Clinic) -> None:
    """script_type is one of greeting, appointment, information, emergency, after_hours."""
    await _rejects(
        db, SCRIPT, clinic.configuration_id, None, "weather", None, says="unknown script_type"
    )
    for kind in ("greeting", "appointment", "information", "emergency", "after_hours"):
        await db.execute(SCRIPT, clinic.configuration_id, None, kind, None)


@pytest.mark.parametrize(
    ("conditions", "says"),
    [
        ([], "must be an object"),
        ({"weekday": ["monday"]}, "unknown key 'weekday'"),
        ({"weekdays": "monday"}, "weekdays must be a list"),
        ({"weekdays": ["Funday"]}, "weekdays must be a list"),
        ({"after": "7pm"}, "after must be HH:MM"),
        ({"before": 18}, "before must be HH:MM"),
        ({"open": "yes"}, "open must be true or false"),
    ],
)
async def test_malformed_script_conditions_rejected(
    db: asyncpg.Connection, clinic: Clinic, conditions: Any, says: str
) -> None:
    """call_scripts.conditions must use the documented keys and value shapes."""
    await _rejects(
        db,
        SCRIPT,
        clinic.configuration_id,
        None,
        "after_hours",
        conditions,
        says=says,
    )


async def test_wellformed_script_conditions_accepted(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Every documented condition key together is accepted, and so are none."""
    conditions = {
        "weekdays": ["saturday", "sunday"],
        "after": "18:00",
        "before": "08:00",
        "open": False,
    }
    await db.execute(SCRIPT, clinic.configuration_id, None, "after_hours", conditions)
    await db.execute(SCRIPT, clinic.configuration_id, None, "greeting", None)
    assert await db.fetchval("select count(*) from call_scripts") == 2


async def test_script_user_must_match_configuration_owner(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call script naming another user than its configuration's owner is refused."""
    stranger = await create_user(db)
    await _rejects(
        db,
        SCRIPT,
        clinic.configuration_id,
        stranger,
        "greeting",
        None,
        says="must match its agent configuration",
    )


# --- call logs --------------------------------------------------------------------------------


async def test_call_cannot_end_before_it_starts(db: asyncpg.Connection, clinic: Clinic) -> None:
    """A call log ending before it started, or with a negative duration, is refused."""
    start = datetime(2027, 1, 6, 15, tzinfo=UTC)
    await _rejects(
        db,
        "insert into customer_call_logs (retell_call_id, started_at, ended_at)"
        " values ('call_1', $1, $2)",
        start,
        start - timedelta(seconds=1),
        says="cannot end before it starts",
    )
    await _rejects(
        db,
        "insert into customer_call_logs (retell_call_id, duration_ms) values ('call_1', -1)",
        says="duration_ms must not be negative",
    )
    assert await db.fetchval("select count(*) from customer_call_logs") == 0


async def test_call_log_user_must_match_configuration_owner(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call log naming another user than its configuration's owner is refused."""
    stranger = await create_user(db)
    await _rejects(
        db,
        "insert into customer_call_logs (retell_call_id, agent_configuration_id, user_id)"
        " values ('call_1', $1, $2)",
        clinic.configuration_id,
        stranger,
        says="must match its agent configuration",
    )


async def test_call_log_owner_filled_from_configuration(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A call log linked to a configuration belongs to that configuration's owner."""
    owner = await db.fetchval(
        "insert into customer_call_logs (retell_call_id, agent_configuration_id)"
        " values ('call_1', $1) returning user_id",
        clinic.configuration_id,
    )
    assert owner == clinic.user_id


async def test_active_agent_id_unique(db: asyncpg.Connection, clinic: Clinic) -> None:
    """Two active configurations cannot claim one Retell agent id; an inactive one may."""
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction():
            await create_clinic(db, with_staff=False)
    await create_clinic(db, with_staff=False, is_active=False)
    assert await db.fetchval("select count(*) from agent_configurations") == 2

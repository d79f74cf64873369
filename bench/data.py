"""The benchmark's data set, loaded with one INSERT ... SELECT per table.

One measured clinic (five staff, weekday hours with a lunch break, a year of appointments)
shares every table with other clinics whose appointments only make the tables big. Ids are
derived from md5 of a name, so that each table's rows can name their parents without a round
trip to read them back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from datetime import time as clock_time

import asyncpg

MEASURED_AGENT_ID = "agent_bench0measured0clinic00000"
MEASURED_TIMEZONE = "America/New_York"
STAFF_PER_CLINIC = 5
STAFF_NAMES = ("Dr. Ada Lee", "Dr. Omar Haddad", "Sam Park", "Dr. Mina Chen", "Jo Rivera")
STAFF_ROLES = ("dentist", "dentist", "hygienist", "dentist", "hygienist")
# Clinic 0 is the measured one; the others spread over a few zones.
OTHER_TIMEZONES = ("America/Chicago", "America/Denver", "America/Los_Angeles", "Europe/London")
# Weekdays 09:00-17:00 with a break 12:00-13:00; one staff member also works Saturday mornings.
DAY_OPENS, DAY_CLOSES = clock_time(9), clock_time(17)
BREAK_STARTS, BREAK_ENDS = clock_time(12), clock_time(13)
SLOT_MINUTES = 30


@dataclass(frozen=True)
class Scale:
    """How much to load: the measured clinic's appointments and the other clinics'."""

    clinic_appointments: int = 2_000
    other_clinics: int = 50
    other_appointments: int = 200_000
    # Past calls of every clinic (the measured one too), and a voicemail on every fourth.
    calls_per_clinic: int = 1_000

    @property
    def past_calls(self) -> int:
        return (self.other_clinics + 1) * self.calls_per_clinic

    @property
    def past_voicemails(self) -> int:
        return (self.other_clinics + 1) * (self.calls_per_clinic // 4)


@dataclass(frozen=True)
class Clinic:
    """What the benchmark needs to know about the measured clinic."""

    agent_id: str
    timezone: str
    staff_names: tuple[str, ...]


INSERT_USERS = """
insert into auth.users (id, email)
select md5('user:' || g)::uuid, 'clinic' || g || '@bench.test'
from generate_series(0, $1::int) g
"""

INSERT_CONFIGURATIONS = """
insert into agent_configurations (
  id, user_id, agent_id, agent_name, business_name, business_phone, business_address, timezone,
  business_hours, forward_number, forward_enabled, voicemail_enabled, greeting_message
)
select md5('configuration:' || g)::uuid, md5('user:' || g)::uuid,
       case when g = 0 then $2 else 'agent_bench' || lpad(g::text, 20, '0') end,
       'Ava', 'Clinic ' || g, '+1617555' || lpad((g % 10000)::text, 4, '0'),
       g || ' Main Street',
       case when g = 0 then $3 else ($4::text[])[1 + g % cardinality($4::text[])] end,
       '{"monday": [{"open": "08:00", "close": "18:00"}],
         "tuesday": [{"open": "08:00", "close": "18:00"}],
         "wednesday": [{"open": "08:00", "close": "18:00"}],
         "thursday": [{"open": "08:00", "close": "18:00"}],
         "friday": [{"open": "08:00", "close": "18:00"}],
         "saturday": [{"open": "09:00", "close": "13:00"}]}'::jsonb,
       '+16175550142', true, true, 'Thank you for calling.'
from generate_series(0, $1::int) g
"""

INSERT_STAFF = """
insert into staff_members (
  id, user_id, agent_configuration_id, staff_name, staff_role, default_appointment_duration
)
select md5('staff:' || g || ':' || k)::uuid, md5('user:' || g)::uuid,
       md5('configuration:' || g)::uuid, ($2::text[])[k + 1], ($3::text[])[k + 1], $4::int
from generate_series(0, $1::int) g, generate_series(0, $5::int - 1) k
"""

INSERT_HOURS = """
insert into staff_availability (
  staff_member_id, day_of_week, start_time, end_time, break_start_time, break_end_time
)
select md5('staff:' || g || ':' || k)::uuid, dow, $2::time,
       case when dow = 6 then time '13:00' else $3::time end,
       case when dow = 6 then null else $4::time end,
       case when dow = 6 then null else $5::time end
from generate_series(0, $1::int) g, generate_series(0, $6::int - 1) k,
     generate_series(1, 6) dow
where dow < 6 or k = $6::int - 1
"""

# The measured clinic's year: two appointments per staff member and weekday, one in the
# morning and one in the afternoon, at times that move from day to day (never overlapping),
# half a year back and half a year ahead; one in twenty cancelled, the past ones completed.
INSERT_CLINIC_APPOINTMENTS = """
insert into appointments (
  staff_member_id, patient_name, patient_phone, appointment_date, appointment_time,
  duration_minutes, appointment_type, status
)
select md5('staff:0:' || k)::uuid, 'Patient ' || n, '+1617555' || lpad((n % 10000)::text, 4, '0'),
       d::date, t, 30, 'checkup',
       case when n % 20 = 0 then 'cancelled' when d::date < $2::date then 'completed'
            else 'scheduled' end
from (
  select k, d, t, row_number() over (order by d, k, t) as n
  from generate_series($2::date - 182, $2::date + 182, interval '1 day') d,
       generate_series(0, $3::int - 1) k,
       lateral (values
         (time '09:00' + make_interval(mins => 30 * ((extract(doy from d)::int + 3 * k) % 6))),
         (time '13:00' + make_interval(mins => 30 * ((extract(doy from d)::int * 7 + k) % 8)))
       ) v(t)
  where extract(isodow from d) < 6
) s
where n <= $1::int
"""

# Every clinic's past calls (call n ended n days ago), each a call log row as the call_ended
# webhook leaves it; every fourth call left a voicemail. Without them the call
# logs and voicemails would be analyzed empty at load, and each pooled session would keep the
# plans it made for an empty table (sequential scans) while the requests grow them
# (bench/NOTES.md, "The outbox's cost measured after 100,000 requests").
INSERT_CALL_LOGS = """
insert into customer_call_logs (
  id, user_id, agent_configuration_id, retell_call_id, agent_id, call_type, direction,
  from_number, to_number, call_status, started_at, ended_at, duration_ms, transcript
)
select md5('call:' || k.g || ':' || n)::uuid, c.user_id, c.id, 'call_history_' || k.g || '_' || n,
       c.agent_id, 'phone_call', 'inbound', '+1415556' || lpad((n % 10000)::text, 4, '0'),
       c.business_phone, 'ended', t.started, t.started + interval '3 minutes', 180000,
       'Agent: Thank you for calling. User: I would like to book a cleaning.'
from (select g, md5('configuration:' || g)::uuid as cid from generate_series(0, $1::int) g) k
join agent_configurations c on c.id = k.cid
cross join generate_series(1, $2::int) n
cross join lateral (
  select ($3::date - n)::timestamp at time zone c.timezone + interval '10 hours' as started
) t
"""
INSERT_VOICEMAILS = """
insert into voicemails (
  user_id, agent_configuration_id, call_log_id, caller_name, caller_phone, transcript,
  recording_url, duration_seconds, message_type, priority, status, received_at
)
select l.user_id, l.agent_configuration_id, l.id, 'Caller ' || l.retell_call_id,
       l.from_number, 'Please call me back about my appointment.',
       'https://recordings.bench.example/' || l.retell_call_id, 180, 'callback_request',
       'normal', 'read', l.ended_at
from customer_call_logs l
where starts_with(l.retell_call_id, 'call_history_')
  and split_part(l.retell_call_id, '_', 4)::int % 4 = 0
"""

# Other clinics' appointments on an hourly grid, eight a day from 400 days back: staff member
# k of clinic c holds its n-th slot for n in [$1, $2). Rows come out ordered by staff member and
# time, as a clinic's calendar would fill the indexes. They skip the row triggers (replica
# role; the exclusion constraint still holds) and carry starts_at/ends_at computed exactly as
# appointments_guard would: no 09:00-17:00 reading is ambiguous or missing on DST days.
INSERT_OTHER_APPOINTMENTS = """
insert into appointments (
  staff_member_id, user_id, patient_name, patient_phone, appointment_date, appointment_time,
  duration_minutes, appointment_type, status, starts_at, ends_at
)
select md5('staff:' || c || ':' || k)::uuid, md5('user:' || c)::uuid, 'Patient ' || n,
       '+1415555' || lpad((n % 10000)::text, 4, '0'), v.d, v.t, 45, 'cleaning',
       case when n % 25 = 0 then 'cancelled' else 'scheduled' end,
       (v.d + v.t) at time zone z.tz, (v.d + v.t) at time zone z.tz + interval '45 minutes'
from generate_series(1, $3::int) c
cross join lateral (select ($6::text[])[1 + c % cardinality($6::text[])] as tz) z
cross join generate_series(0, $4::int - 1) k
cross join generate_series($1::int, $2::int - 1) n
cross join lateral (
  select $5::date - 400 + n / 8 as d, time '09:00' + make_interval(hours => n % 8) as t
) v
"""


async def _skip_triggers(conn: asyncpg.Connection) -> None:
    """For the rest of the transaction, rows skip the row triggers (their values are given)."""
    # Only a superuser may skip triggers; anyone else runs them, slower, to the same rows.
    if await conn.fetchval("select current_setting('is_superuser') = 'on'"):
        await conn.execute("set local session_replication_role = replica")


async def load_clinics(conn: asyncpg.Connection, scale: Scale, today: date) -> Clinic:
    """The measured clinic and the other clinics, with staff, hours and the clinic's year."""
    others = scale.other_clinics
    async with conn.transaction():
        await conn.execute(INSERT_USERS, others)
        await conn.execute(
            INSERT_CONFIGURATIONS, others, MEASURED_AGENT_ID, MEASURED_TIMEZONE, OTHER_TIMEZONES
        )
        await conn.execute(
            INSERT_STAFF, others, STAFF_NAMES, STAFF_ROLES, SLOT_MINUTES, STAFF_PER_CLINIC
        )
        await conn.execute(
            INSERT_HOURS, others, DAY_OPENS, DAY_CLOSES, BREAK_STARTS, BREAK_ENDS, STAFF_PER_CLINIC
        )
        await conn.execute(
            INSERT_CLINIC_APPOINTMENTS, scale.clinic_appointments, today, STAFF_PER_CLINIC
        )
    async with conn.transaction():
        await _skip_triggers(conn)
        await conn.execute(INSERT_CALL_LOGS, others, scale.calls_per_clinic, today)
        await conn.execute(INSERT_VOICEMAILS)
    await conn.execute("analyze")
    return Clinic(MEASURED_AGENT_ID, MEASURED_TIMEZONE, STAFF_NAMES)


async def add_other_appointments(
    conn: asyncpg.Connection, scale: Scale, start: int, stop: int, today: date
) -> None:
    """Grow the other clinics' appointments from `start` to `stop` rows (in whole grid rows)."""
    staff = scale.other_clinics * STAFF_PER_CLINIC
    first, last = start // staff, stop // staff
    if last <= first:
        return
    async with conn.transaction():
        await _skip_triggers(conn)
        await conn.execute(
            INSERT_OTHER_APPOINTMENTS,
            first,
            last,
            scale.other_clinics,
            STAFF_PER_CLINIC,
            today,
            OTHER_TIMEZONES,
        )
    # As an operator would after a bulk load: otherwise autovacuum works through the new rows
    # (and competes for the 2 cores) while the growth figures are measured.
    await conn.execute("vacuum (analyze) appointments")


async def load(conn: asyncpg.Connection, scale: Scale, today: date) -> tuple[Clinic, float]:
    """Load the whole data set; returns the clinic and the seconds it took."""
    started = time.perf_counter()
    clinic = await load_clinics(conn, scale, today)
    await add_other_appointments(conn, scale, 0, scale.other_appointments, today)
    return clinic, time.perf_counter() - started


FUTURE_APPOINTMENTS = """
select s.staff_name, a.appointment_date, a.appointment_time
from appointments a join staff_members s on s.id = a.staff_member_id
where s.agent_configuration_id = md5('configuration:0')::uuid
  and a.status <> 'cancelled' and a.appointment_date >= $1
"""


async def free_grid_slots(
    conn: asyncpg.Connection, first: date, last: date
) -> list[tuple[str, date, str]]:
    """The measured clinic's weekday grid slots from `first` to `last` that nobody holds."""
    rows = await conn.fetch(FUTURE_APPOINTMENTS, first)
    taken = {(r["staff_name"], r["appointment_date"], r["appointment_time"]) for r in rows}
    free: list[tuple[str, date, str]] = []
    day = first
    while day <= last:
        if day.isoweekday() < 6:
            for hour in (9, 10, 11, 13, 14, 15, 16):
                for minute in (0, 30):
                    for name in STAFF_NAMES:
                        at = f"{hour:02d}:{minute:02d}"
                        if (name, day, clock_time(hour, minute)) not in taken:
                            free.append((name, day, at))
        day += timedelta(days=1)
    return free

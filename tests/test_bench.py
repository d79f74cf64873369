"""The benchmark's data loader and report keep working (no timing is asserted here)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from bench import data, report
from bench.client import Run
from bench.run import Options, Results, Row

SMALL = data.Scale(
    clinic_appointments=300, other_clinics=3, other_appointments=1_500, calls_per_clinic=100
)


async def test_loader_builds_the_measured_clinic_and_others(db: asyncpg.Connection) -> None:
    """The loader makes 1 + 3 clinics with 5 staff each, the clinic's appointments, and the
    others' appointments in whole grid rows, none overlapping and each with its instants."""
    today = date(2026, 12, 1)
    clinic, _ = await data.load(db, SMALL, today)

    assert clinic.agent_id == data.MEASURED_AGENT_ID
    assert await db.fetchval("select count(*) from agent_configurations") == 4
    assert await db.fetchval("select count(*) from staff_members") == 20
    measured = await db.fetchval(
        """
        select count(*) from appointments a join staff_members s on s.id = a.staff_member_id
        join agent_configurations c on c.id = s.agent_configuration_id
        where c.agent_id = $1
        """,
        data.MEASURED_AGENT_ID,
    )
    assert measured == 300
    assert await db.fetchval("select count(*) from appointments") == 300 + 1_500
    # starts_at of the bulk rows equals what the trigger computes for the clinic's zone.
    mismatched = await db.fetchval(
        """
        select count(*) from appointments a join staff_members s on s.id = a.staff_member_id
        join agent_configurations c on c.id = s.agent_configuration_id
        where a.starts_at <> (a.appointment_date + a.appointment_time) at time zone c.timezone
           or a.ends_at <> a.starts_at + make_interval(mins => a.duration_minutes)
        """
    )
    assert mismatched == 0


async def test_loader_gives_every_clinic_a_call_history_analyzed_non_empty(
    db: asyncpg.Connection,
) -> None:
    """Each clinic gets 100 ended calls and 25 voicemails on its own calls, and the planner's
    statistics know both tables are not empty (plans made for empty ones scan them)."""
    today = date(2026, 12, 1)
    await data.load(db, SMALL, today)

    per_clinic = await db.fetch(
        """
        select c.agent_id, count(distinct l.id) as calls, count(v.id) as voicemails
        from agent_configurations c
        join customer_call_logs l on l.agent_configuration_id = c.id and l.user_id = c.user_id
        left join voicemails v on v.call_log_id = l.id
          and v.agent_configuration_id = c.id and v.user_id = c.user_id
        group by c.agent_id
        """
    )
    assert len(per_clinic) == 4
    assert {(r["calls"], r["voicemails"]) for r in per_clinic} == {(100, 25)}
    assert await db.fetchval("select count(*) from voicemails") == SMALL.past_voicemails == 100
    assert await db.fetchval("select count(*) from customer_call_logs") == SMALL.past_calls
    # All in the past of the load's day: nothing the measured requests could be taken for.
    latest = await db.fetchval("select max(ended_at) from customer_call_logs")
    assert latest < datetime(2026, 12, 1, tzinfo=UTC)
    estimated = await db.fetch(
        "select relname, reltuples from pg_class"
        " where relname in ('customer_call_logs', 'voicemails')"
    )
    assert {r["relname"]: r["reltuples"] for r in estimated} == {
        "customer_call_logs": 400,
        "voicemails": 100,
    }


async def test_growing_the_table_adds_only_new_grid_rows(db: asyncpg.Connection) -> None:
    """Growing from 1,500 to 3,000 other appointments adds exactly 1,500 rows."""
    today = date(2026, 12, 1)
    await data.load(db, SMALL, today)
    await data.add_other_appointments(db, SMALL, 1_500, 3_000, today)
    assert await db.fetchval("select count(*) from appointments") == 300 + 3_000


async def test_free_grid_slots_are_bookable_and_not_taken(db: asyncpg.Connection) -> None:
    """The slots offered for bookings are weekday grid times nobody in the clinic holds."""
    today = date(2026, 12, 1)
    await data.load(db, SMALL, today)
    first, last = today + timedelta(days=1), today + timedelta(days=14)
    slots = await data.free_grid_slots(db, first, last)
    held = await db.fetch(
        """
        select s.staff_name, a.appointment_date, to_char(a.appointment_time, 'HH24:MI') as at
        from appointments a join staff_members s on s.id = a.staff_member_id
        where s.agent_configuration_id = md5('configuration:0')::uuid and a.status <> 'cancelled'
        """
    )
    taken = {(r["staff_name"], r["appointment_date"], r["at"]) for r in held}
    assert slots
    assert not taken & set(slots)
    assert all(day.isoweekday() < 6 and first <= day <= last for _, day, _ in slots)


def test_report_writes_the_readme_section_between_markers(tmp_path: Path) -> None:
    """Rendering puts the table under ## Performance, and a second run replaces it in place."""
    floor = Row("GET /readyz (floor)", Run([1_000_000] * 10, 0.01), Run([2_000_000] * 10, 0.01))
    results = Results(started=datetime(2026, 12, 1, tzinfo=UTC), options=Options(), cores=2)
    results.rows = [floor, Row("webhook call_ended", note="n/a: the endpoint answers 404")]
    readme = tmp_path / "README.md"
    readme.write_text("# Service\n\n## Layout\n\ntext\n")

    report.write_readme(readme, report.render(results))
    report.write_readme(readme, report.render(results))

    text = readme.read_text()
    assert text.count(report.BEGIN) == 1
    assert text.count("## Performance") == 1
    assert "| GET /readyz (floor) | 1.00 | 1.00x |" in text
    assert "n/a: the endpoint answers 404" in text
    assert text.startswith("# Service\n\n## Layout\n\ntext\n")

"""Row level security: a signed-in Supabase user reaches only rows that lead back to them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import asyncpg
import orjson
import pytest

from tests.factories import Clinic, add_appointment, add_time_off, create_clinic
from tests.test_faults import next_weekday

# How each table's rows lead back to their owner, as the table owner (who bypasses RLS) sees it.
OWNED_IDS = {
    "agent_configurations": "select id from agent_configurations where user_id = $1",
    "staff_members": "select id from staff_members where user_id = $1",
    "staff_availability": "select a.id from staff_availability a"
    " join staff_members s on s.id = a.staff_member_id where s.user_id = $1",
    "staff_time_off": "select t.id from staff_time_off t"
    " join staff_members s on s.id = t.staff_member_id where s.user_id = $1",
    "appointments": "select id from appointments where user_id = $1",
    "voicemails": "select id from voicemails where user_id = $1",
    "call_scripts": "select id from call_scripts where user_id = $1",
    "customer_call_logs": "select id from customer_call_logs where user_id = $1",
    "profiles": "select id from profiles where id = $1",
    "agent_configs": "select id from agent_configs where user_id = $1",
    "upcoming_appointments": "select id from appointments where user_id = $1",
    "unread_voicemails": "select id from voicemails where user_id = $1",
    "todays_calls": "select id from customer_call_logs where user_id = $1",
}
VIEWS = ("upcoming_appointments", "unread_voicemails", "todays_calls")
TABLES = [name for name in OWNED_IDS if name not in VIEWS]
# A harmless column each table can be updated on.
TOUCH = {
    "agent_configurations": "agent_name",
    "staff_members": "staff_role",
    "staff_availability": "is_active",
    "staff_time_off": "notes",
    "appointments": "notes",
    "voicemails": "subject",
    "call_scripts": "script_name",
    "customer_call_logs": "call_status",
    "profiles": "full_name",
    "agent_configs": "agent_id",
}
# Children first, so that deleting everything one can reach breaks no foreign key.
DELETE_ORDER = [
    "appointments",
    "voicemails",
    "call_scripts",
    "staff_time_off",
    "staff_availability",
    "staff_members",
    "customer_call_logs",
    "profiles",
    "agent_configurations",
]
CLAIM_STYLES = ["claims", "claim.sub"]
# Written only by the service (call logs) or the operator (the agent id mapping): a signed-in
# user reads their own rows there, and may delete their own call logs.
READ_ONLY = ("customer_call_logs", "agent_configs")
WRITABLE = [name for name in TABLES if name not in READ_ONLY]


@pytest.fixture
def db(rollback_db: asyncpg.Connection) -> asyncpg.Connection:
    """Every test here runs in a transaction that is rolled back (signed_in nests savepoints)."""
    return rollback_db


@dataclass
class Tenants:
    a: Clinic
    b: Clinic


async def _populate(db: asyncpg.Connection, clinic: Clinic, tag: str) -> None:
    """One row of every kind for this clinic."""
    lee = clinic.staff["Dr. Ada Lee"]
    # Ahead of today: upcoming_appointments compares with the database's now().
    day = next_weekday(weekday=2)
    await add_time_off(db, lee, day + timedelta(days=5), day + timedelta(days=6))
    await add_appointment(db, lee, day, time(9))
    call_log = await db.fetchval(
        "insert into customer_call_logs (retell_call_id, agent_configuration_id, started_at)"
        " values ($1, $2, now()) returning id",
        f"call_{tag}",
        clinic.configuration_id,
    )
    await db.execute(
        "insert into voicemails (agent_configuration_id, call_log_id, caller_phone, transcript)"
        " values ($1, $2, '+16175550187', 'Please call me back')",
        clinic.configuration_id,
        call_log,
    )
    await db.execute(
        "insert into call_scripts (agent_configuration_id, script_name, script_type,"
        " script_content) values ($1, 'Hello', 'greeting', 'Hi')",
        clinic.configuration_id,
    )
    await db.execute("insert into profiles (id, full_name) values ($1, $2)", clinic.user_id, tag)
    await db.execute(
        "insert into agent_configs (user_id, agent_id) values ($1, $2)",
        clinic.user_id,
        clinic.agent_id,
    )


@pytest.fixture
async def tenants(db: asyncpg.Connection) -> Tenants:
    """Two clinics of two users, each with a row in every table."""
    a = await create_clinic(db, agent_id="agent_aaaaaaaaaaaaaaaaaaaaaaaa")
    b = await create_clinic(db, agent_id="agent_bbbbbbbbbbbbbbbbbbbbbbbb")
    await _populate(db, a, "a")
    await _populate(db, b, "b")
    return Tenants(a, b)


@asynccontextmanager
async def signed_in(
    db: asyncpg.Connection, user_id: uuid.UUID | None, style: str = "claims"
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction as Supabase runs a request: role authenticated, the JWT in settings.

    Everything done inside is rolled back.
    """
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute("set local role authenticated")
        if user_id is not None and style == "claims":
            claims = orjson.dumps({"sub": str(user_id), "role": "authenticated"}).decode()
            await db.execute("select set_config('request.jwt.claims', $1, true)", claims)
        elif user_id is not None:
            await db.execute("select set_config('request.jwt.claim.sub', $1, true)", str(user_id))
        yield db
    finally:
        await transaction.rollback()


async def _owned(db: asyncpg.Connection, relation: str, user_id: uuid.UUID) -> set[uuid.UUID]:
    return {row["id"] for row in await db.fetch(OWNED_IDS[relation], user_id)}


async def test_every_public_table_has_row_level_security(db: asyncpg.Connection) -> None:
    """No table in the public schema is left without row level security (or without a policy,
    except migrate's two ledgers, which no signed-in user should read)."""
    rows = await db.fetch(
        """
        select c.relname, c.relrowsecurity,
               exists (select 1 from pg_policy p where p.polrelid = c.oid) as has_policy
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind in ('r', 'p')
        """
    )
    assert {r["relname"] for r in rows} >= set(TABLES)
    assert [r["relname"] for r in rows if not r["relrowsecurity"]] == []
    assert sorted(r["relname"] for r in rows if not r["has_policy"]) == [
        "schema_definitions",
        "schema_migrations",
    ]


async def test_views_apply_the_readers_row_level_security(db: asyncpg.Connection) -> None:
    """The three views run with the reader's rights (security_invoker), not their owner's."""
    options = await db.fetch(
        "select relname, reloptions from pg_class where relname = any($1::text[])", list(VIEWS)
    )
    assert {r["relname"]: r["reloptions"] for r in options} == {
        view: ["security_invoker=true"] for view in VIEWS
    }
    async with signed_in(db, None):
        for view in VIEWS:
            assert await db.fetchval(f"select count(*) from {view}") == 0  # noqa: S608


@pytest.mark.parametrize("style", CLAIM_STYLES)
async def test_user_sees_only_own_rows(
    db: asyncpg.Connection, tenants: Tenants, style: str
) -> None:
    """Every table and view shows user A exactly A's rows, with either claim setting."""
    expected = {name: await _owned(db, name, tenants.a.user_id) for name in OWNED_IDS}
    others = {name: await _owned(db, name, tenants.b.user_id) for name in OWNED_IDS}
    async with signed_in(db, tenants.a.user_id, style):
        for name in OWNED_IDS:
            seen = {row["id"] for row in await db.fetch(f"select id from {name}")}  # noqa: S608
            assert expected[name], name
            assert others[name], name
            assert seen == expected[name], name


async def test_no_claims_sees_nothing(db: asyncpg.Connection, tenants: Tenants) -> None:
    """As authenticated without a JWT, every table and view is empty."""
    async with signed_in(db, None):
        for name in OWNED_IDS:
            assert await db.fetchval(f"select count(*) from {name}") == 0, name  # noqa: S608
            if name in TOUCH and name not in READ_ONLY:
                status = await db.execute(f"update {name} set {TOUCH[name]} = {TOUCH[name]}")  # noqa: S608
                assert status == "UPDATE 0", name


@pytest.mark.parametrize("table", WRITABLE)
async def test_user_updates_only_own_rows(
    db: asyncpg.Connection, tenants: Tenants, table: str
) -> None:
    """An unfiltered UPDATE as user A touches exactly A's rows."""
    expected = await _owned(db, table, tenants.a.user_id)
    async with signed_in(db, tenants.a.user_id):
        column = TOUCH[table]
        rows = await db.fetch(
            f"update {table} set {column} = {column} returning id"  # noqa: S608
        )
    assert {row["id"] for row in rows} == expected


async def test_user_cannot_change_the_services_and_operators_tables(
    db: asyncpg.Connection, tenants: Tenants
) -> None:
    """Updating call logs or the agent id mapping is refused to a signed-in user, even on their
    own rows, and so is removing a mapping."""
    statements = [f"update {t} set {TOUCH[t]} = {TOUCH[t]}" for t in READ_ONLY]  # noqa: S608
    for sql in [*statements, "delete from agent_configs"]:
        async with signed_in(db, tenants.a.user_id):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await db.execute(sql)
    for table in READ_ONLY:
        assert await _owned(db, table, tenants.a.user_id), table


async def test_user_deletes_only_own_rows(db: asyncpg.Connection, tenants: Tenants) -> None:
    """An unfiltered DELETE of every table as user A removes exactly A's rows."""
    expected = {name: await _owned(db, name, tenants.a.user_id) for name in DELETE_ORDER}
    deleted: dict[str, set[uuid.UUID]] = {}
    async with signed_in(db, tenants.a.user_id):
        for table in DELETE_ORDER:
            rows = await db.fetch(f"delete from {table} returning id")  # noqa: S608
            deleted[table] = {row["id"] for row in rows}
    assert deleted == expected


async def test_user_cannot_give_rows_away(db: asyncpg.Connection, tenants: Tenants) -> None:
    """User A cannot move A's configuration or staff member to user B."""
    async with signed_in(db, tenants.a.user_id):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("update agent_configurations set user_id = $1", tenants.b.user_id)
    async with signed_in(db, tenants.a.user_id):
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.CheckViolationError)):
            await db.execute("update staff_members set user_id = $1", tenants.b.user_id)


def _foreign_inserts(t: Tenants) -> list[tuple[str, str, tuple[object, ...]]]:
    """(table, statement, arguments) writing a row owned by B, or hanging from B's rows."""
    b_staff = t.b.staff["Dr. Ada Lee"]
    return [
        (
            "agent_configurations",
            "insert into agent_configurations (user_id, agent_id, agent_name, business_name)"
            " values ($1, 'agent_new', 'Ava', 'Stolen')",
            (t.b.user_id,),
        ),
        (
            "staff_members",
            "insert into staff_members (agent_configuration_id, staff_name) values ($1, 'Dr. X')",
            (t.b.configuration_id,),
        ),
        (
            "staff_members",
            "insert into staff_members (user_id, agent_configuration_id, staff_name)"
            " values ($1, $2, 'Dr. X')",
            (t.b.user_id, t.b.configuration_id),
        ),
        (
            "staff_availability",
            "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
            " values ($1, 6, '09:00', '12:00')",
            (b_staff,),
        ),
        (
            "staff_time_off",
            "insert into staff_time_off (staff_member_id, start_date, end_date)"
            " values ($1, '2027-05-01', '2027-05-02')",
            (b_staff,),
        ),
        (
            "appointments",
            "insert into appointments (staff_member_id, patient_name, patient_phone,"
            " appointment_date, appointment_time) values ($1, 'Eve', '+16175550100',"
            " '2027-03-04', '10:00')",
            (b_staff,),
        ),
        (
            "appointments",
            "insert into appointments (user_id, staff_member_id, patient_name, patient_phone,"
            " appointment_date, appointment_time) values ($1, $2, 'Eve', '+16175550100',"
            " '2027-03-04', '10:00')",
            (t.b.user_id, b_staff),
        ),
        (
            "voicemails",
            "insert into voicemails (agent_configuration_id, caller_phone, transcript)"
            " values ($1, '+16175550100', 'hi')",
            (t.b.configuration_id,),
        ),
        (
            "call_scripts",
            "insert into call_scripts (agent_configuration_id, script_name, script_type,"
            " script_content) values ($1, 'x', 'greeting', 'x')",
            (t.b.configuration_id,),
        ),
        (
            "call_scripts",
            "insert into call_scripts (user_id, script_name, script_type, script_content)"
            " values ($1, 'x', 'greeting', 'x')",
            (t.b.user_id,),
        ),
        (
            "customer_call_logs",
            "insert into customer_call_logs (retell_call_id, agent_configuration_id)"
            " values ('call_new', $1)",
            (t.b.configuration_id,),
        ),
        (
            "customer_call_logs",
            "insert into customer_call_logs (retell_call_id, user_id) values ('call_new', $1)",
            (t.b.user_id,),
        ),
        (
            "customer_call_logs",
            "insert into customer_call_logs (retell_call_id, user_id, agent_configuration_id)"
            " values ('call_new', $1, $2)",
            (t.a.user_id, t.b.configuration_id),
        ),
        (
            "voicemails",
            "insert into voicemails (user_id, agent_configuration_id, caller_phone, transcript)"
            " values ($1, $2, '+16175550100', 'hi')",
            (t.a.user_id, t.b.configuration_id),
        ),
        (
            "call_scripts",
            "insert into call_scripts (user_id, agent_configuration_id, script_name,"
            " script_type, script_content) values ($1, $2, 'x', 'greeting', 'x')",
            (t.a.user_id, t.b.configuration_id),
        ),
        (
            "staff_members",
            "insert into staff_members (user_id, agent_configuration_id, staff_name)"
            " values ($1, $2, 'Dr. X')",
            (t.a.user_id, t.b.configuration_id),
        ),
        ("profiles", "insert into profiles (id) values ($1)", (t.b.user_id,)),
        (
            "agent_configs",
            "insert into agent_configs (user_id, agent_id) values ($1, 'agent_new')",
            (t.b.user_id,),
        ),
    ]


async def test_user_cannot_insert_for_another_user(
    db: asyncpg.Connection, tenants: Tenants
) -> None:
    """Rows owned by B, or hanging from B's configuration or staff, are refused to A."""
    before = {t: await db.fetchval(f"select count(*) from {t}") for t in TABLES}  # noqa: S608
    for table, sql, args in _foreign_inserts(tenants):
        async with signed_in(db, tenants.a.user_id):
            with pytest.raises(
                (asyncpg.InsufficientPrivilegeError, asyncpg.CheckViolationError)
            ) as raised:
                await db.execute(sql, *args)
            assert raised.value.sqlstate in ("42501", "23514"), (table, raised.value)
    after = {t: await db.fetchval(f"select count(*) from {t}") for t in TABLES}  # noqa: S608
    assert after == before


async def test_user_can_insert_own_rows(db: asyncpg.Connection, tenants: Tenants) -> None:
    """The policies let A write A's own rows (they are not simply closed)."""
    a = tenants.a
    async with signed_in(db, a.user_id):
        staff = await db.fetchval(
            "insert into staff_members (agent_configuration_id, staff_name) values ($1, 'Dr. New')"
            " returning id",
            a.configuration_id,
        )
        await db.execute(
            "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
            " values ($1, 6, '09:00', '12:00')",
            staff,
        )
        await db.execute(
            "insert into appointments (staff_member_id, patient_name, patient_phone,"
            " appointment_date, appointment_time) values ($1, 'Eve', '+16175550100',"
            " $2, '10:00')",
            staff,
            # A Saturday (day 6, the staff member's day) ahead of the database's own clock,
            # which the view compares with.
            next_weekday(weekday=5),
        )
        await db.execute(
            "insert into voicemails (agent_configuration_id, caller_phone, transcript)"
            " values ($1, '+16175550100', 'hello')",
            a.configuration_id,
        )
        upcoming = await db.fetchval(
            "select count(*) from upcoming_appointments where staff_member_id = $1", staff
        )
        assert upcoming == 1
        assert await db.fetchval("select count(*) from unread_voicemails") == 2


async def test_todays_calls_is_the_clinics_today(db: asyncpg.Connection, tenants: Tenants) -> None:
    """todays_calls lists calls started on the clinic's current local date only."""
    await db.execute(
        "insert into customer_call_logs (retell_call_id, agent_configuration_id, started_at)"
        " values ('call_old', $1, $2)",
        tenants.a.configuration_id,
        datetime(2020, 1, 1, tzinfo=UTC),
    )
    async with signed_in(db, tenants.a.user_id):
        calls = await db.fetch("select retell_call_id from todays_calls")
    assert [row["retell_call_id"] for row in calls] == ["call_a"]

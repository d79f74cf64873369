"""Tenancy on a hosted Supabase project: what `anon` and another clinic's signed-in user can reach.

The database here is set up as Supabase sets up a project (tests/supabase.py) and migrated by a
role that, like Supabase's `postgres`, is no superuser. Each attack runs as PostgREST runs a
request: logged in as the authenticator, switched to `anon` or `authenticated`, with the JWT's
claims in `request.jwt.claims`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from service.demo import DEMO_AGENT_ID, load_demo
from service.metrics import Metrics
from service.migrate import migrate
from tests.conftest import APP_TABLES, _connect, load_fixture, new_database, post_signed
from tests.factories import Clinic, add_appointment, create_clinic
from tests.supabase import (
    AUTHENTICATOR,
    OWNER,
    auth_snapshot,
    prepare_database,
    request_as,
    with_user,
)

A_AGENT = "agent_a1a1a1a1a1a1a1a1a1a1a1a1a1"
B_AGENT = "agent_b2b2b2b2b2b2b2b2b2b2b2b2b2"
UNUSED_AGENT = "agent_c3c3c3c3c3c3c3c3c3c3c3c3c3"
# A refusal by privilege (42501: grants, row level security) or by a rule (23514: a trigger).
REFUSED = (asyncpg.InsufficientPrivilegeError, asyncpg.CheckViolationError)
WEB_CALL = "webhook_call_analyzed__assembled-docs-web-call.json"
ACCESS_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ2aWRlbyI6eyJyb29tSm9p"

# The project's own functions (those of its schemas, not an extension's), and who may run them.
PROJECT_FUNCTIONS = """
select p.oid::regprocedure::text as name,
       has_function_privilege('anon', p.oid, 'execute') as anon,
       has_function_privilege('authenticated', p.oid, 'execute') as authenticated,
       exists (select 1 from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) e
               where e.grantee = 0 and e.privilege_type = 'EXECUTE') as public
from pg_proc p
where p.pronamespace in ('public'::regnamespace, 'slot_cache'::regnamespace)
  and not exists (select 1 from pg_depend d
                  where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
"""
# What a signed-in user's own writes need: the helpers their tables' triggers call.
AUTHENTICATED_MAY_EXECUTE = {
    "business_hours_problem(jsonb)",
    "is_e164(text)",
    "owner_of_configuration(uuid)",
    "parse_clock(text)",
    "reject(text)",
    "same_clinic_call_log(uuid,uuid)",
    "script_conditions_problem(jsonb)",
    "staff_lock_key(uuid)",
}


@dataclass
class Project:
    owner_url: str
    authenticator_url: str
    auth_before: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def project(server_url: str) -> AsyncIterator[Project]:
    """A database set up as Supabase's platform sets one up, then migrated as its `postgres`."""
    async with new_database(server_url, "svc_supabase") as url:
        await prepare_database(url)
        owner_url = with_user(url, OWNER)
        conn = await asyncpg.connect(owner_url)
        try:
            before = await auth_snapshot(conn)
        finally:
            await conn.close()
        await migrate(owner_url)
        yield Project(owner_url, with_user(url, AUTHENTICATOR), before)


@pytest.fixture
async def operator(project: Project) -> AsyncIterator[asyncpg.Connection]:
    """The operator: the role that migrated and owns everything, as the service connects."""
    conn = await _connect(project.owner_url)
    await conn.execute(f"truncate {APP_TABLES}, auth.users cascade")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def web(project: Project) -> AsyncIterator[asyncpg.Connection]:
    """PostgREST's connection: requests switch it to anon or authenticated (request_as)."""
    conn = await _connect(project.authenticator_url)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class Tenants:
    a: Clinic
    b: Clinic
    a_call: uuid.UUID
    b_call: uuid.UUID


def call_event(clinic: Clinic, call_id: str, name: str = "call_started") -> dict[str, Any]:
    body = copy.deepcopy(load_fixture(f"webhook_{name}.json"))
    body["call"]["agent_id"] = clinic.agent_id
    body["call"]["call_id"] = call_id
    # Started a minute ago: a call of today wherever the clinic is.
    started = int(datetime.now(UTC).timestamp() * 1000) - 60_000
    body["call"]["start_timestamp"] = started
    if "end_timestamp" in body["call"]:
        body["call"]["end_timestamp"] = started + body["call"]["duration_ms"]
    return body


async def store_event(conn: asyncpg.Connection, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await conn.fetchval(
        "select rx_call_event($1, $2)", body["event"], body
    )
    return result


async def mapped_clinic(conn: asyncpg.Connection, agent_id: str, name: str) -> Clinic:
    """A clinic whose agent id the operator has assigned to its user (agent_configs)."""
    clinic = await create_clinic(conn, agent_id=agent_id, business_name=name)
    await conn.execute(
        "insert into agent_configs (user_id, agent_id) values ($1, $2)", clinic.user_id, agent_id
    )
    return clinic


@pytest.fixture
async def tenants(operator: asyncpg.Connection) -> Tenants:
    """Clinics A and B, each with its assigned agent id and a call that Retell reported."""
    a = await mapped_clinic(operator, A_AGENT, "Brightside Dental")
    b = await mapped_clinic(operator, B_AGENT, "Harbor Orthodontics")
    a_call = await store_event(operator, call_event(a, "call_a0000000000000000000000001"))
    b_call = await store_event(operator, call_event(b, "call_b0000000000000000000000001"))
    return Tenants(a, b, uuid.UUID(a_call["call_log_id"]), uuid.UUID(b_call["call_log_id"]))


async def record(conn: asyncpg.Connection, sql: str, *args: object) -> dict[str, Any]:
    found = await conn.fetchrow(sql, *args)
    assert found is not None
    return dict(found)


def next_monday() -> date:
    """A Monday at least a week ahead: bookable whatever the day the tests run."""
    today = date.today()
    return today + timedelta(days=7 + (7 - today.weekday()) % 7)


def new_configuration(user_id: uuid.UUID, agent_id: str) -> tuple[str, uuid.UUID, str]:
    return (
        "insert into agent_configurations (user_id, agent_id, agent_name, business_name)"
        " values ($1, $2, 'Ava', 'Mine now')",
        user_id,
        agent_id,
    )


async def refusal(
    web: asyncpg.Connection, user_id: uuid.UUID, sql: str, *args: object
) -> tuple[str, str]:
    """(sqlstate, message) of a statement that user_id's request must be refused."""
    async with request_as(web, "authenticated", user_id):
        with pytest.raises(REFUSED) as raised:
            await web.execute(sql, *args)
    return raised.value.sqlstate, str(raised.value)


# 1. Taking over a clinic's agent id.


async def test_user_cannot_take_a_paused_clinics_agent_id(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """While B is paused, A can neither create nor edit a configuration onto B's agent id; B then
    reactivates and its calls still route to B."""
    a, b = tenants.a, tenants.b
    await operator.execute(
        "update agent_configurations set is_active = false where id = $1", b.configuration_id
    )
    await refusal(web, a.user_id, *new_configuration(a.user_id, b.agent_id))
    await refusal(web, a.user_id, "update agent_configurations set agent_id = $1", b.agent_id)
    async with request_as(web, "authenticated", b.user_id):
        assert await web.execute("update agent_configurations set is_active = true") == "UPDATE 1"
        routed = await web.fetchval(
            "select user_id from agent_configurations where agent_id = $1 and is_active",
            b.agent_id,
        )
        assert routed == b.user_id
    assert (
        await operator.fetchval(
            "select count(*) from agent_configurations where agent_id = $1", b.agent_id
        )
        == 1
    )


async def test_user_cannot_assign_agent_ids_to_themselves(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """agent_configs is the operator's: A reads their own row, and can add, move or remove none."""
    a = tenants.a
    await refusal(
        web,
        a.user_id,
        "insert into agent_configs (user_id, agent_id) values ($1, $2)",
        a.user_id,
        UNUSED_AGENT,
    )
    await refusal(web, a.user_id, "update agent_configs set agent_id = $1", tenants.b.agent_id)
    await refusal(web, a.user_id, "delete from agent_configs")
    async with request_as(web, "authenticated", a.user_id):
        assert await web.fetchval("select array_agg(agent_id) from agent_configs") == [a.agent_id]
    assert await operator.fetchval("select count(*) from agent_configs") == 2


async def test_refusing_an_agent_id_tells_nothing_of_its_use(
    web: asyncpg.Connection, tenants: Tenants
) -> None:
    """A configuration with B's active agent id and one with an id nobody uses are refused to A
    with the same error: the unique index answers no questions."""
    a = tenants.a
    taken = await refusal(web, a.user_id, *new_configuration(a.user_id, tenants.b.agent_id))
    unused = await refusal(web, a.user_id, *new_configuration(a.user_id, UNUSED_AGENT))
    assert taken == unused
    assert taken[0] == "42501"


async def test_user_edits_own_configuration_with_assigned_agent_ids(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """A's other columns stay A's to edit, and an id the operator assigns to A can be used."""
    a = tenants.a
    await operator.execute(
        "insert into agent_configs (user_id, agent_id) values ($1, $2)", a.user_id, UNUSED_AGENT
    )
    async with request_as(web, "authenticated", a.user_id):
        edited = await web.execute(
            "update agent_configurations set business_name = 'Brightside Family Dental',"
            " is_active = false"
        )
        assert edited == "UPDATE 1"
        assert await web.execute(*new_configuration(a.user_id, UNUSED_AGENT)) == "INSERT 0 1"
        assert (
            await web.execute(
                "update agent_configurations set is_active = true where agent_id = $1", a.agent_id
            )
            == "UPDATE 1"
        )


async def test_service_role_assigns_agent_ids(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """Supabase's service_role writes the mapping and any configuration, as the owner does."""
    async with request_as(web, "service_role"):
        await web.execute(
            "insert into agent_configs (user_id, agent_id) values ($1, $2)",
            tenants.a.user_id,
            UNUSED_AGENT,
        )
        await web.execute(*new_configuration(tenants.b.user_id, "agent_operator_made"))
        assert await web.fetchval("select count(*) from agent_configs") == 3


async def test_demo_clinic_loads_as_the_operator_and_is_its_owners(
    project: Project, operator: asyncpg.Connection, web: asyncpg.Connection
) -> None:
    """`serve --demo`'s loader runs (twice) as Supabase's postgres would, assigning the demo's
    agent id to its owner, who can then edit the clinic signed in."""
    for _ in range(2):
        await load_demo(project.owner_url)
    owner = await operator.fetchval(
        "select user_id from agent_configs where agent_id = $1", DEMO_AGENT_ID
    )
    assert owner is not None
    async with request_as(web, "authenticated", owner):
        edited = await web.execute(
            "update agent_configurations set greeting_message = 'Brightside Dental, hello!',"
            " is_active = false"
        )
        assert edited == "UPDATE 1"
        assert await web.execute("update agent_configurations set is_active = true") == "UPDATE 1"


# 2. Planting a call log.


async def test_user_cannot_plant_or_rehome_a_call_log(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """A can create no call log, nor move their own onto another call id, clinic or user."""
    a = tenants.a
    await refusal(
        web,
        a.user_id,
        "insert into customer_call_logs (retell_call_id, agent_configuration_id)"
        " values ('call_b0000000000000000000000002', $1)",
        a.configuration_id,
    )
    for sql, value in (
        ("update customer_call_logs set retell_call_id = $1", "call_b0000000000000000000000002"),
        ("update customer_call_logs set agent_id = $1", tenants.b.agent_id),
        ("update customer_call_logs set user_id = $1", tenants.b.user_id),
        ("update customer_call_logs set events = $1", {}),
    ):
        await refusal(web, a.user_id, sql, value)
    async with request_as(web, "authenticated", a.user_id):
        seen = await web.fetchval("select array_agg(id) from customer_call_logs")
        assert seen == [tenants.a_call]
    assert await operator.fetchval("select count(*) from customer_call_logs") == 2


async def test_service_never_merges_a_call_into_another_clinics_row(
    operator: asyncpg.Connection, tenants: Tenants
) -> None:
    """When A's configuration holds the row of call X, B's events, forward request, message and
    booking for X leave that row as it was and reach A nothing."""
    a, b = tenants.a, tenants.b
    call_x = "call_b0000000000000000000000003"
    planted = await store_event(operator, call_event(a, call_x))
    row = "select * from customer_call_logs where id = $1"
    before = await record(operator, row, uuid.UUID(planted["call_log_id"]))
    result = await store_event(operator, call_event(b, call_x, "call_ended"))
    assert result == {"problem": "call_of_another_clinic"}
    call = {"call_id": call_x, "agent_id": b.agent_id, "from_number": "+16175550187"}
    await operator.fetchval(
        "select rx_forward_call($1, $2, $3, now(), 0)", b.agent_id, call, {"reason": "pain"}
    )
    saved = await operator.fetchval(
        "select rx_leave_voicemail($1, $2, $3, now(), 0)",
        b.agent_id,
        call,
        {"caller_phone": "+16175550187", "message": "Please call me back"},
    )
    assert saved["saved"] is True
    booked = await operator.fetchval(
        "select rx_book_appointment($1, $2, $3, now(), 0)",
        b.agent_id,
        call,
        {
            "date": str(next_monday()),
            "time": "10:00",
            "staff_name": "Ada Lee",
            "patient_name": "Maria Gonzalez",
            "patient_phone": "+16175550187",
        },
    )
    assert booked["booked"] is True
    assert await record(operator, row, before["id"]) == before
    links = await operator.fetch(
        "select call_log_id from voicemails union all select call_log_id from appointments"
    )
    assert [link["call_log_id"] for link in links] == [None, None]


async def test_ids_have_bounded_lengths(operator: asyncpg.Connection, tenants: Tenants) -> None:
    """A call id or agent id of more than 128 characters is refused by the database."""
    long_call = call_event(tenants.a, "call_" + "9" * 124)
    with pytest.raises(asyncpg.CheckViolationError):
        await store_event(operator, long_call)
    with pytest.raises(asyncpg.CheckViolationError):
        await operator.execute(
            "insert into agent_configs (user_id, agent_id) values ($1, $2)",
            tenants.a.user_id,
            "agent_" + "9" * 123,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await operator.execute(*new_configuration(tenants.a.user_id, "agent_" + "9" * 123))
    long_call["call"]["call_id"] = "call_" + "9" * 123
    assert "call_log_id" in await store_event(operator, long_call)


# 3. Links across tenants.


async def test_user_cannot_link_rows_to_another_clinics_call_log(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """A's appointment or message pointing at B's call log is refused exactly as one pointing at
    no call log at all, even with the words of B's message on it (the unique index answers
    nothing); B can then still delete its call log."""
    a = tenants.a
    await operator.execute(
        "insert into voicemails (agent_configuration_id, call_log_id, caller_phone, transcript)"
        " values ($1, $2, '+16175550187', 'Please call me back')",
        tenants.b.configuration_id,
        tenants.b_call,
    )
    own_message = await operator.fetchval(
        "insert into voicemails (agent_configuration_id, caller_phone, transcript)"
        " values ($1, '+16175550187', 'hi') returning id",
        a.configuration_id,
    )
    errors: dict[uuid.UUID, list[tuple[str, str]]] = {}
    for target in (tenants.b_call, uuid.uuid4()):
        errors[target] = [
            await refusal(
                web,
                a.user_id,
                "insert into appointments (staff_member_id, call_log_id, patient_name,"
                " patient_phone, appointment_date, appointment_time)"
                " values ($1, $2, 'Eve', '+16175550100', '2027-03-04', '10:00')",
                a.staff["Dr. Ada Lee"],
                target,
            ),
            await refusal(
                web,
                a.user_id,
                "insert into voicemails (agent_configuration_id, call_log_id, caller_phone,"
                " transcript) values ($1, $2, '+16175550100', 'Please call me back')",
                a.configuration_id,
                target,
            ),
            await refusal(
                web,
                a.user_id,
                "update voicemails set call_log_id = $2 where id = $1",
                own_message,
                target,
            ),
        ]
    foreign, missing = errors.values()
    assert foreign == missing
    assert [sqlstate for sqlstate, _ in foreign] == ["23514"] * 3
    async with request_as(web, "authenticated", tenants.b.user_id):
        assert await web.execute("delete from voicemails") == "DELETE 1"
        assert await web.execute("delete from customer_call_logs") == "DELETE 1"


async def test_no_writer_links_rows_across_clinics(
    operator: asyncpg.Connection, tenants: Tenants
) -> None:
    """Even the operator can't make an appointment or message of one clinic reference another
    clinic's call log, nor a message of one of A's clinics the call of A's other clinic."""
    a, b = tenants.a, tenants.b
    with pytest.raises(asyncpg.CheckViolationError):
        await operator.execute(
            "insert into appointments (staff_member_id, call_log_id, patient_name,"
            " patient_phone, appointment_date, appointment_time)"
            " values ($1, $2, 'Eve', '+16175550100', '2027-03-04', '10:00')",
            a.staff["Dr. Ada Lee"],
            tenants.b_call,
        )
    second = await operator.fetchval(
        "insert into agent_configurations (user_id, agent_id, agent_name, business_name)"
        " values ($1, $2, 'Ava', 'Brightside North') returning id",
        a.user_id,
        UNUSED_AGENT,
    )
    for configuration, call_log in ((b.configuration_id, tenants.a_call), (second, tenants.a_call)):
        with pytest.raises(asyncpg.CheckViolationError):
            await operator.execute(
                "insert into voicemails (agent_configuration_id, call_log_id, caller_phone,"
                " transcript) values ($1, $2, '+16175550100', 'hi')",
                configuration,
                call_log,
            )
    appointment = await add_appointment(operator, a.staff["Dr. Ada Lee"], date(2027, 3, 3), time(9))
    await operator.execute(
        "update appointments set call_log_id = $2 where id = $1", appointment, tenants.a_call
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await operator.execute(
            "update customer_call_logs set agent_configuration_id = $2 where id = $1",
            tenants.a_call,
            second,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await operator.execute(
            "update staff_members set agent_configuration_id = $2 where id = $1",
            a.staff["Dr. Ada Lee"],
            second,
        )
    moved = await operator.execute(
        "update staff_members set agent_configuration_id = $2 where id = $1",
        a.staff["Sam Park"],
        second,
    )
    assert moved == "UPDATE 1"


# 4. Everything executable by everyone.


async def test_anon_executes_no_project_function(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """No project function is executable by anon or PUBLIC, and /rpc/lock_staff or
    /rpc/book_into as anon is refused."""
    functions = await operator.fetch(PROJECT_FUNCTIONS)
    assert len(functions) > 50
    assert [f["name"] for f in functions if f["anon"] or f["public"]] == []
    staff = tenants.b.staff["Dr. Ada Lee"]
    for sql, args in (
        ("select lock_staff($1)", (staff,)),
        ("select rx_book_appointment($1, '{}', '{}', now(), 0)", (tenants.b.agent_id,)),
    ):
        async with request_as(web, "anon"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await web.execute(sql, *args)


async def test_anon_reaches_no_table(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """The public key holds no privilege on any table of the project, so it can neither read a
    clinic's calls nor plant a call log or an agent id mapping."""
    for sql, args in (
        ("select count(*) from customer_call_logs", ()),
        ("insert into customer_call_logs (retell_call_id) values ($1)", ("call_b000000005",)),
        ("insert into agent_configs (user_id, agent_id) values ($1, $2)", (tenants.a.user_id, "x")),
        ("update agent_configurations set agent_id = $1", (tenants.b.agent_id,)),
    ):
        async with request_as(web, "anon"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await web.execute(sql, *args)
    granted = await operator.fetch(
        "select c.relname from pg_class c"
        " where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'v', 'p')"
        " and (has_table_privilege('anon', c.oid, 'select, insert, update, delete')"
        "      or has_table_privilege('anon', c.oid, 'truncate, references, trigger'))"
    )
    assert [row["relname"] for row in granted] == []


async def test_authenticated_executes_only_what_its_own_writes_need(
    operator: asyncpg.Connection, web: asyncpg.Connection, tenants: Tenants
) -> None:
    """authenticated may run only the helpers its tables' triggers call: no rx_ function, and
    nothing that takes a lock."""
    functions = await operator.fetch(PROJECT_FUNCTIONS)
    executable = {f["name"] for f in functions if f["authenticated"]}
    assert executable == AUTHENTICATED_MAY_EXECUTE
    own_staff = tenants.a.staff["Dr. Ada Lee"]
    for sql, args in (
        ("select lock_staff($1)", (own_staff,)),
        ("select rx_check_availability($1, '{}', '{}', now(), 0)", (tenants.a.agent_id,)),
        ("select slot_cache.touch(array[$1::uuid])", (own_staff,)),
    ):
        async with request_as(web, "authenticated", tenants.a.user_id):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await web.execute(sql, *args)


async def test_functions_added_later_are_not_executable_either(
    operator: asyncpg.Connection,
) -> None:
    """A function the owner creates after migrating is executable by neither PUBLIC, anon nor
    authenticated (default privileges), but by service_role."""
    async with operator.transaction():
        await operator.execute(
            "create function tenancy_probe() returns int language sql as 'select 1'"
        )
        rights = await record(
            operator,
            "select has_function_privilege('anon', 'tenancy_probe()', 'execute') as anon,"
            " has_function_privilege('authenticated', 'tenancy_probe()', 'execute') as signed_in,"
            " has_function_privilege('service_role', 'tenancy_probe()', 'execute') as service",
        )
        assert rights == {"anon": False, "signed_in": False, "service": True}
        await operator.execute("drop function tenancy_probe()")


async def test_migrating_alters_nothing_in_schema_auth(
    project: Project, operator: asyncpg.Connection
) -> None:
    """Schema auth, auth.users and auth.uid() keep the owners, grants and definitions that they
    had before the project's SQL ran."""
    after = await auth_snapshot(operator)
    assert len(after) >= 3
    assert after == project.auth_before


async def test_signed_in_user_manages_own_clinic(web: asyncpg.Connection, tenants: Tenants) -> None:
    """With only those rights, A still adds staff, hours, time off, an appointment, a message and
    a script, and reads them back through the views."""
    a = tenants.a
    today = date.today()
    saturday = today + timedelta(days=7 + (5 - today.weekday()) % 7)
    async with request_as(web, "authenticated", a.user_id):
        staff = await web.fetchval(
            "insert into staff_members (agent_configuration_id, staff_name) values ($1, 'Dr. New')"
            " returning id",
            a.configuration_id,
        )
        await web.execute(
            "insert into staff_availability (staff_member_id, day_of_week, start_time, end_time)"
            " values ($1, 6, '09:00', '12:00')",
            staff,
        )
        await web.execute(
            "insert into staff_time_off (staff_member_id, start_date, end_date)"
            " values ($1, '2027-05-01', '2027-05-02')",
            staff,
        )
        await web.execute(
            "insert into appointments (staff_member_id, call_log_id, patient_name, patient_phone,"
            " appointment_date, appointment_time) values ($1, $2, 'Eve', '+16175550100',"
            " $3, '10:00')",
            staff,
            tenants.a_call,
            saturday,
        )
        await web.execute(
            "insert into voicemails (agent_configuration_id, call_log_id, caller_phone,"
            " transcript) values ($1, $2, '+16175550100', 'hello')",
            a.configuration_id,
            tenants.a_call,
        )
        await web.execute(
            "insert into call_scripts (agent_configuration_id, script_name, script_type,"
            " script_content, conditions) values ($1, 'Late', 'greeting', 'Hi',"
            ' \'{"after": "18:00"}\')',
            a.configuration_id,
        )
        await web.execute(
            "update agent_configurations set timezone = 'America/Chicago',"
            ' business_hours = \'{"saturday": [{"open": "09:00", "close": "12:00"}]}\','
            " forward_number = '+16175550142'"
        )
        assert await web.fetchval("select count(*) from upcoming_appointments") == 1
        assert await web.fetchval("select count(*) from unread_voicemails") == 1
        assert await web.fetchval("select count(*) from todays_calls") == 1


# 5. Credentials in storage.


def web_call(clinic: Clinic) -> dict[str, Any]:
    """Retell's documented web call, as call_analyzed for this clinic, with a secret variable."""
    body = copy.deepcopy(load_fixture(WEB_CALL))
    body["call"]["agent_id"] = clinic.agent_id
    body["call"]["retell_llm_dynamic_variables"]["crm_api_token"] = "crm-0123456789"
    return body


async def test_stored_events_keep_no_credentials(
    operator: asyncpg.Connection, tenants: Tenants
) -> None:
    """A web call's access_token and a variable named as a secret are not in the stored event;
    the transcript, analysis and other variables are."""
    body = web_call(tenants.a)
    stored = await store_event(operator, body)
    events = await operator.fetchval(
        "select events from customer_call_logs where id = $1", uuid.UUID(stored["call_log_id"])
    )
    kept = events["call_analyzed"]["call"]
    assert ACCESS_TOKEN not in orjson.dumps(events).decode()
    assert "crm-0123456789" not in orjson.dumps(events).decode()
    assert "access_token" not in kept
    assert kept["retell_llm_dynamic_variables"] == {"customer_name": "John Doe"}
    assert kept["transcript"] == body["call"]["transcript"]
    assert kept["call_analysis"] == body["call"]["call_analysis"]
    expected = copy.deepcopy(body)
    del expected["call"]["access_token"]
    del expected["call"]["retell_llm_dynamic_variables"]["crm_api_token"]
    assert events == {"call_analyzed": expected}


async def test_webhook_stores_no_access_token(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Through the service's webhook, a web call's stored events hold no access token."""
    clinic = await create_clinic(db)
    response = await post_signed(client, "/retell/webhook", web_call(clinic))
    assert response.status_code == 204
    stored = await db.fetchval("select events::text from customer_call_logs")
    assert "Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6" in stored
    assert ACCESS_TOKEN not in stored


async def test_webhook_acknowledges_a_call_held_by_another_clinic(
    app: Starlette, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """B's call_ended for a call id that A's row holds is answered 204, counted as
    other_clinic, and changes nothing."""
    a = await create_clinic(db, agent_id=A_AGENT)
    b = await create_clinic(db, agent_id=B_AGENT)
    call_x = "call_b0000000000000000000000004"
    assert (await post_signed(client, "/retell/webhook", call_event(a, call_x))).status_code == 204
    before = await record(db, "select * from customer_call_logs")
    ended = call_event(b, call_x, "call_ended")
    assert (await post_signed(client, "/retell/webhook", ended)).status_code == 204
    assert await record(db, "select * from customer_call_logs") == before
    metrics: Metrics = app.state.metrics
    counted = metrics.registry.get_sample_value(
        "webhook_events_total", {"event": "call_ended", "outcome": "other_clinic"}
    )
    assert counted == 1


async def test_overlong_ids_are_refused_before_the_database(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A call id over 128 characters gets a 4xx with a JSON reason from the webhook and from a
    function, and stores nothing."""
    clinic = await create_clinic(db)
    long_id = "call_" + "7" * 124
    event = call_event(clinic, long_id)
    function = copy.deepcopy(load_fixture("custom_function_leave_voicemail.json"))
    function["call"].update(call_id=long_id, agent_id=clinic.agent_id)
    for path, body in (("/retell/webhook", event), ("/retell/functions/leave_voicemail", function)):
        response = await post_signed(client, path, body)
        assert response.status_code in (400, 422), (path, response.text)
        assert "call_id" in response.json()["message"], path
    assert await db.fetchval("select count(*) from customer_call_logs") == 0
    assert await db.fetchval("select count(*) from voicemails") == 0

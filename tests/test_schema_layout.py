"""The schema layout: a baseline plus definition files, each object defined once; a database of
the old layout upgraded by one migrate ends up as a fresh one; edits handled as the rules say."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.migrate import (
    SCHEMA_DIR,
    MigrationRefused,
    load_definitions,
    load_migrations,
    migrate,
    pending_changes,
)
from tests.catalog import catalog
from tests.conftest import APP_TABLES, FIXTURES_DIR, _connect, new_database
from tests.factories import add_appointment, create_clinic
from tests.test_migrate import _cli_env, _run_cli

LEGACY = FIXTURES_DIR / "legacy_schema"
SHIPPED = [
    *sorted(p.name for p in SCHEMA_DIR.glob("*.sql")),
    *sorted(f"definitions/{p.name}" for p in (SCHEMA_DIR / "definitions").glob("*.sql")),
]
# What an upgrade from the old layout applies: the baseline stands for the old files, and every
# versioned file after it runs.
AFTER_BASELINE = [m.version for m in load_migrations() if m.version > 1]
# Catalog rows a migrate could write: a row rewritten in place gets a new xmin.
CATALOG_ROWS = """
select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_class
union all select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_proc
union all select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_trigger
union all select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_policy
union all select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_namespace
union all select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_rewrite
union all select format('%s %s %s', tableoid::regclass, oid, xmin) from pg_constraint
union all select format('pg_attribute %s %s %s', attrelid, attnum, xmin) from pg_attribute
"""


def _legacy_dir(tmp_path: Path, variant: str) -> Path:
    """The old layout's files: as at the baseline's start, or with 0007 as it was before f0c70a5
    (when the cache ran slot_cache.touch_from_new_rows and two siblings)."""
    directory = tmp_path / f"legacy_{variant}"
    shutil.copytree(LEGACY, directory)
    if variant == "0007_before_f0c70a5":
        shutil.copy(FIXTURES_DIR / "legacy_schema_older" / "0007_availability_cache.sql", directory)
    return directory


def _schema_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, directory)
    return directory


async def _rows(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    """Every row of every clinic table, as JSON, in a stable order."""
    tables = [t.strip() for t in APP_TABLES.split(",")] + ["auth.users"]
    return {
        table: await conn.fetch(
            f"select to_jsonb(t)::text from {table} t order by t.id"  # noqa: S608
        )
        for table in tables
    }


async def _clinic_activity(conn: asyncpg.Connection, now: datetime) -> dict[str, Any]:
    """A clinic with staff, an appointment, a message and a call; what its agent is told."""
    clinic = await create_clinic(conn)
    monday = now.date() + timedelta(days=7 - now.weekday() + 7)
    await add_appointment(conn, clinic.staff["Dr. Ada Lee"], monday, time(10))
    call = {"call_id": "call_upgrade_1", "agent_id": clinic.agent_id, "from_number": "+16175550187"}
    await conn.execute(
        "select rx_leave_voicemail($1, $2, $3, $4, 60)",
        clinic.agent_id,
        call,
        {"caller_phone": "+16175550187", "message": "Please call me back."},
        now,
    )
    await conn.execute(
        "select rx_call_event('call_started', $1)",
        {"event": "call_started", "call": {**call, "call_status": "ongoing"}},
    )
    availability = await conn.fetchval(
        "select rx_check_availability($1, $2, $3, $4, 60)",
        clinic.agent_id,
        call,
        {"date": monday.isoformat(), "staff_name": "Ada Lee"},
        now,
    )
    return {"monday": monday, "agent_id": clinic.agent_id, "availability": availability}


@pytest.fixture
async def second_database(server_url: str) -> AsyncIterator[str]:
    """Another brand-new empty database, dropped afterwards."""
    async with new_database(server_url, "svc_layout") as url:
        yield url


@pytest.mark.parametrize("variant", ["at_baseline_start", "0007_before_f0c70a5"])
async def test_upgraded_database_is_identical_to_a_fresh_one(
    empty_database: str, second_database: str, tmp_path: Path, variant: str
) -> None:
    """A database of the old layout, with clinic rows, is brought by one migrate to exactly the
    catalog a fresh database gets: functions, views, triggers, policies, grants, indexes,
    columns and constraints; every clinic row is kept and the same question gets the same answer."""
    now = datetime.now(UTC).replace(microsecond=0)
    await migrate(empty_database, _legacy_dir(tmp_path, variant))
    conn = await _connect(empty_database)
    try:
        before = await _clinic_activity(conn, now)
        rows_before = await _rows(conn)
        if variant == "0007_before_f0c70a5":
            assert await conn.fetchval(
                "select to_regprocedure('slot_cache.touch_from_new_rows()') is not null"
            )
    finally:
        await conn.close()

    assert await migrate(empty_database) == AFTER_BASELINE
    await migrate(second_database)

    upgraded = await _connect(empty_database)
    fresh = await _connect(second_database)
    try:
        assert await catalog(upgraded) == await catalog(fresh)
        assert await _rows(upgraded) == rows_before
        assert await upgraded.fetchval(
            "select to_regprocedure('slot_cache.touch_from_new_rows()') is null"
        )
        ledger = "select version, name, checksum from schema_migrations order by version"
        assert await upgraded.fetch(ledger) == await fresh.fetch(ledger)
        assert await pending_changes(upgraded) == []
        availability = await upgraded.fetchval(
            "select rx_check_availability($1, $2, $3, $4, 60)",
            before["agent_id"],
            {"call_id": "call_upgrade_2"},
            {"date": before["monday"].isoformat(), "staff_name": "Ada Lee"},
            now,
        )
        assert availability == before["availability"]
        assert "10:00" not in [slot["time"] for slot in availability["slots"]]
        assert len(availability["slots"]) == 12
    finally:
        await upgraded.close()
        await fresh.close()


async def test_part_of_the_old_layout_is_refused(empty_database: str, tmp_path: Path) -> None:
    """A database that applied only some of the old files is refused, naming what it has."""
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("0001_supabase_compat.sql", "0002_tables.sql"):
        shutil.copy(LEGACY / name, partial)
    await migrate(empty_database, partial)
    with pytest.raises(
        MigrationRefused, match=r"only part of the old schema layout \(versions \[1, 2\]\)"
    ):
        await migrate(empty_database)


async def test_second_migrate_writes_no_catalog_row(empty_database: str) -> None:
    """Once migrated, migrate again rewrites no row of the catalog: not even the ledgers'."""
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        before = {r[0] for r in await conn.fetch(CATALOG_ROWS)}
        assert await migrate(empty_database) == []
        after = {r[0] for r in await conn.fetch(CATALOG_ROWS)}
    finally:
        await conn.close()
    assert after == before


async def test_changed_definition_file_is_applied_again(
    empty_database: str, tmp_path: Path, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """Editing a definition file re-applies that file alone on the next migrate."""
    schema = _schema_copy(tmp_path)
    await migrate(empty_database, schema)
    scheduling = schema / "definitions" / "03_scheduling.sql"
    text = scheduling.read_text(encoding="utf-8")
    assert text.count("when p_date > p_today + 366") == 1
    scheduling.write_text(text.replace("p_today + 366", "p_today + 30"), encoding="utf-8")
    conn = await asyncpg.connect(empty_database)
    try:
        far = "select date_problem(current_date + 100, current_date, 'UTC') ->> 'problem'"
        assert await conn.fetchval(far) is None
        assert await pending_changes(conn, schema) == ["definitions/03_scheduling.sql"]
        rules = "select xmin::text from pg_proc where proname = 'appointments_guard'"
        rules_before = await conn.fetchval(rules)
        json_logs()
        assert await migrate(empty_database, schema) == []
        applied = [line["file"] for line in json_logs() if line["event"] == "definition_applied"]
        assert applied == ["definitions/03_scheduling.sql"]
        assert await conn.fetchval(far) == "too_far"
        assert await conn.fetchval(rules) == rules_before
        assert await pending_changes(conn, schema) == []
    finally:
        await conn.close()


async def test_changed_applied_migration_is_refused(empty_database: str, tmp_path: Path) -> None:
    """An applied versioned file that was edited stops migrate before it applies anything."""
    schema = _schema_copy(tmp_path)
    await migrate(empty_database, schema)
    baseline = schema / "0001_baseline.sql"
    baseline.write_text(baseline.read_text(encoding="utf-8") + "\n-- edited\n", encoding="utf-8")
    views = schema / "definitions" / "07_views.sql"
    views.write_text("drop view todays_calls;\n", encoding="utf-8")
    with pytest.raises(MigrationRefused, match=r"^schema/0001_baseline\.sql has changed since"):
        await migrate(empty_database, schema)
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("select to_regclass('todays_calls') is not null")
        assert await pending_changes(conn, schema) == [
            "0001_baseline.sql",
            "definitions/07_views.sql",
        ]
    finally:
        await conn.close()


@pytest.mark.slow
async def test_cli_refusal_is_one_line_and_fails(empty_database: str) -> None:
    """`migrate` on a database whose applied baseline differs exits 1 with one line naming it."""
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("update schema_migrations set checksum = 'edited' where version = 1")
    finally:
        await conn.close()
    code, lines = await _run_cli("migrate", env=_cli_env(DATABASE_URL=empty_database))
    assert code == 1
    (refused,) = [line for line in lines if line.get("event") == "migration_refused"]
    assert str(refused["reason"]).startswith("schema/0001_baseline.sql has changed")
    assert [line for line in lines if line.get("level") == "error"] == [refused]


async def test_new_migration_reapplies_definitions(empty_database: str, tmp_path: Path) -> None:
    """A versioned file may drop a view in the way of its change: the definitions re-create it."""
    schema = _schema_copy(tmp_path)
    await migrate(empty_database, schema)
    version = len(load_migrations(schema)) + 1
    (schema / f"{version:04d}_direction_text.sql").write_text(
        "drop view todays_calls;\n"
        "alter table customer_call_logs alter column direction type text;\n",
        encoding="utf-8",
    )
    assert await migrate(empty_database, schema) == [version]
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("select to_regclass('todays_calls') is not null")
        assert (
            await conn.fetchval(
                "select data_type from information_schema.columns"
                " where table_name = 'todays_calls' and column_name = 'direction'"
            )
            == "text"
        )
        assert await pending_changes(conn, schema) == []
    finally:
        await conn.close()


async def test_definition_files_can_be_applied_again_as_they_are(empty_database: str) -> None:
    """Each definition file runs again over itself without error and leaves the same catalog."""
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        before = await catalog(conn)
        await conn.execute("delete from schema_definitions")
        assert await pending_changes(conn) == [p for p in SHIPPED if p.startswith("definitions/")]
        await migrate(empty_database)
        assert await catalog(conn) == before
        assert await pending_changes(conn) == []
    finally:
        await conn.close()


async def test_pending_changes_without_ledger_lists_every_file(empty_database: str) -> None:
    """A database never migrated has every shipped file pending; a migrated one none."""
    conn = await asyncpg.connect(empty_database)
    try:
        assert await pending_changes(conn) == SHIPPED
        await migrate(empty_database)
        assert await pending_changes(conn) == []
    finally:
        await conn.close()


async def test_pending_changes_of_old_layout(empty_database: str) -> None:
    """A database of the old layout has the baseline and every definition file pending."""
    await migrate(empty_database, LEGACY)
    conn = await asyncpg.connect(empty_database)
    try:
        assert await pending_changes(conn) == SHIPPED
    finally:
        await conn.close()


_CREATES = re.compile(
    r"\bcreate\s+(?:or\s+replace\s+)?(function|view|policy|trigger)\s+(\"[^\"]+\"|[a-z_][a-z0-9_.]*)",
    re.IGNORECASE,
)
# Policies and triggers are named per table.
_ON_TABLE = re.compile(r"[^;]*?\son\s+([a-z_][a-z0-9_.]*)", re.IGNORECASE)


def _created(sql: str) -> list[tuple[str, str]]:
    """(kind, name) of each create statement; a policy's or trigger's name includes its table."""
    found = []
    for match in _CREATES.finditer(sql):
        kind, name = match[1].lower(), match[2].lower()
        if kind in ("policy", "trigger"):
            table = _ON_TABLE.match(sql, match.end())
            name = f"{name} on {table[1].lower() if table else '?'}"
        found.append((kind, name.removeprefix("public.")))
    return found


def _schema_statements() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(SCHEMA_DIR.rglob("*.sql"))
        if path.parent.name != "upgrade"
    )


def test_each_object_is_created_by_one_statement() -> None:
    """No function, view, trigger or policy is created twice under schema/, and no function's
    properties are set after its create statement."""
    created = Counter(_created(_schema_statements()))
    assert [item for item, n in created.items() if n > 1] == []
    assert {kind for kind, _ in created} == {"function", "view", "policy", "trigger"}
    assert not re.search(r"\balter\s+function\b", _schema_statements(), re.IGNORECASE)


async def test_every_function_has_its_create_statement(database_url: str) -> None:
    """Every function of a migrated database (extensions' aside) has its create statement."""
    created = {name for kind, name in _created(_schema_statements()) if kind == "function"}
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            select case when n.nspname = 'public' then p.proname
                        else n.nspname || '.' || p.proname end
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname in ('public', 'slot_cache', 'auth')
              and not exists (select 1 from pg_depend d
                              where d.objid = p.oid and d.deptype = 'e')
            """
        )
    finally:
        await conn.close()
    assert {r[0] for r in rows} == created
    assert len(created) > 60


async def test_ledgers_are_hidden_from_supabase_roles(empty_database: str) -> None:
    """Granted to anon as Supabase grants every public table, the ledgers still show no row."""
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("grant select on schema_migrations, schema_definitions to anon")
        async with conn.transaction():
            await conn.execute("set local role anon")
            assert await conn.fetchval("select count(*) from schema_migrations") == 0
            assert await conn.fetchval("select count(*) from schema_definitions") == 0
        assert await conn.fetchval("select count(*) from schema_definitions") == len(
            load_definitions()
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "names",
    [["01_rules.sql", "03_views.sql"], ["1_rules.sql"], ["01-rules.sql"], ["0001_rules.sql"]],
)
def test_definition_files_must_be_numbered_without_gaps(tmp_path: Path, names: list[str]) -> None:
    """Definition files are NN_area.sql numbered 1..N; anything else stops the run first."""
    folder = tmp_path / "schema" / "definitions"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text("select 1;", encoding="utf-8")
    with pytest.raises(MigrationRefused, match=r"NN_area\.sql|without gaps"):
        load_definitions(tmp_path / "schema")

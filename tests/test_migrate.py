"""Migrations: applied in order once each, safely from two processes, around existing tables."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from service.migrate import (
    SCHEMA_DIR,
    MigrationRefused,
    load_definitions,
    load_migrations,
    migrate,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSIONS = [m.version for m in load_migrations()]

# Everything a migration could create or change, with object ids: a dropped and re-created
# object changes the fingerprint even when it reads the same.
FINGERPRINT = """
select md5(string_agg(item, E'\\n' order by item)) from (
  select format('rel %s %s %s %s', c.oid, n.nspname, c.relname, c.relkind)
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname in ('public', 'auth')
  union all
  select format('col %s %s %s %s %s', c.oid, a.attname, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
  from pg_attribute a
  join pg_class c on c.oid = a.attrelid
  join pg_namespace n on n.oid = c.relnamespace
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
  where n.nspname in ('public', 'auth') and a.attnum > 0 and not a.attisdropped
  union all
  select format('con %s %s %s', oid, conname, pg_get_constraintdef(oid)) from pg_constraint
  where connamespace in (select oid from pg_namespace where nspname in ('public', 'auth'))
  union all
  select format('trg %s %s %s', oid, tgname, tgenabled) from pg_trigger where not tgisinternal
  union all
  select format('pol %s %s %s %s', oid, polname, pg_get_expr(polqual, polrelid),
                pg_get_expr(polwithcheck, polrelid)) from pg_policy
  union all
  select format('fn %s %s %s', p.oid, p.oid::regprocedure, md5(p.prosrc))
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where n.nspname in ('public', 'auth')
  union all
  select format('acl %s %s', c.oid, c.relacl) from pg_class c
  join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'
  union all
  select format('ext %s %s', extname, extversion) from pg_extension
) as catalog(item)
"""
LEDGER = "select version, name, checksum from schema_migrations order by version"


async def _query(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_applies_on_empty_database_then_changes_nothing(empty_database: str) -> None:
    """The first run applies every file in order; a second run applies none and alters nothing."""
    assert await migrate(empty_database) == SCHEMA_VERSIONS
    ledger = await _query(empty_database, LEDGER)
    fingerprint = (await _query(empty_database, FINGERPRINT))[0][0]
    assert [row["version"] for row in ledger] == SCHEMA_VERSIONS
    tables = await _query(
        empty_database,
        "select tablename from pg_tables where schemaname = 'public' order by tablename",
    )
    assert {row["tablename"] for row in tables} >= {
        "agent_configurations",
        "staff_members",
        "staff_availability",
        "staff_time_off",
        "appointments",
        "voicemails",
        "call_scripts",
        "customer_call_logs",
        "profiles",
        "agent_configs",
    }

    assert await migrate(empty_database) == []
    assert await _query(empty_database, LEDGER) == ledger
    assert (await _query(empty_database, FINGERPRINT))[0][0] == fingerprint


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")}
    env.update(LOG_FORMAT="json", LOG_LEVEL="INFO", **extra)
    return env


async def _run_cli(*args: str, env: dict[str, str]) -> tuple[int, list[dict[str, object]]]:
    """Run `python -m service ...`; its exit code and its JSON log lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    lines = [orjson.loads(line) for line in output.splitlines() if line.startswith(b"{")]
    assert process.returncode is not None
    return process.returncode, lines


@pytest.mark.slow
async def test_two_processes_at_once_apply_each_file_once(empty_database: str) -> None:
    """Two `python -m service migrate` started together both succeed; each file applies once."""
    env = _cli_env(DATABASE_URL=empty_database)
    (code_a, log_a), (code_b, log_b) = await asyncio.gather(
        _run_cli("migrate", env=env), _run_cli("migrate", env=env)
    )
    assert (code_a, code_b) == (0, 0), (log_a, log_b)
    applied = [
        int(str(line["version"]))
        for line in log_a + log_b
        if line.get("event") == "migration_applied"
    ]
    assert sorted(applied) == SCHEMA_VERSIONS
    ledger = await _query(empty_database, LEDGER)
    assert [row["version"] for row in ledger] == SCHEMA_VERSIONS


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


async def test_failing_migration_rolls_back_only_itself(
    empty_database: str, tmp_path: Path, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """A failing file leaves earlier files applied and nothing of its own; fixed, it applies.

    The failure is logged with the file's version; an applied file edited later is never re-run:
    migrate refuses, naming it."""
    schema = _write(
        tmp_path / "schema",
        {
            "0001_first.sql": "create table first_table (id int);",
            "0002_broken.sql": "create table second_table (id int);\nselect 1 / 0;",
        },
    )
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(empty_database, schema)
    (failed,) = [line for line in json_logs() if line["event"] == "migration_failed"]
    assert (failed["version"], failed["name"], failed["sqlstate"]) == (2, "broken", "22012")
    assert [row["version"] for row in await _query(empty_database, LEDGER)] == [1]
    tables = await _query(
        empty_database, "select tablename from pg_tables where schemaname = 'public'"
    )
    assert {row["tablename"] for row in tables} == {
        "schema_migrations",
        "schema_definitions",
        "first_table",
    }
    # The advisory lock went with the session: the next run is not blocked.
    _write(schema, {"0002_broken.sql": "create table second_table (id int);"})
    assert await asyncio.wait_for(migrate(empty_database, schema), timeout=10) == [2]
    # An applied file edited afterwards is not run again: the run refuses, naming the file.
    _write(schema, {"0001_first.sql": "create table first_table (id bigint);"})
    with pytest.raises(MigrationRefused, match=r"^schema/0001_first\.sql has changed since"):
        await migrate(empty_database, schema)
    assert [row["version"] for row in await _query(empty_database, LEDGER)] == [1, 2]


@pytest.mark.parametrize(
    "names",
    [
        ["0001_first.sql", "0003_third.sql"],
        ["0002_second.sql"],
        ["0001_first.sql", "0001_again.sql"],
        ["1_first.sql"],
        ["0001_First.sql"],
        ["0001-first.sql"],
    ],
)
def test_files_must_be_numbered_without_gaps(tmp_path: Path, names: list[str]) -> None:
    """Files are NNNN_name.sql numbered 1..N; anything else stops the run before it starts."""
    schema = _write(tmp_path / "schema", {name: "select 1;" for name in names})
    with pytest.raises(ValueError, match=r"NNNN_description|without gaps"):
        load_migrations(schema)


def test_repository_schema_is_well_named() -> None:
    """The schema/ folder itself loads: the baseline first, then the definition files in order."""
    assert load_migrations(SCHEMA_DIR)[0].file_name == "0001_baseline.sql"
    assert [d.file_name for d in load_definitions(SCHEMA_DIR)][:2] == [
        "01_supabase_compat.sql",
        "02_rules.sql",
    ]


SUPABASE_LIKE = """
create schema auth;
create table auth.users (
  id uuid primary key,
  email varchar(255),
  raw_user_meta_data jsonb,
  created_at timestamptz
);
create function auth.uid() returns uuid language sql stable as $$
  select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid  -- supabase's own
$$;
insert into auth.users (id, email) values
  ('11111111-1111-1111-1111-111111111111', 'ada@example.com'),
  ('22222222-2222-2222-2222-222222222222', 'omar@example.com');

create table customer_call_logs (
  id uuid primary key default gen_random_uuid(),
  retell_call_id text,
  from_number text,
  transcript text,
  created_at timestamptz default now()
);
insert into customer_call_logs (retell_call_id, from_number, transcript) values
  ('call_old_1', '+16175550187', 'Hello?'),
  ('call_old_2', '+16175550188', 'Hi there');

create table profiles (
  id uuid primary key references auth.users(id),
  full_name text,
  avatar_url text
);
insert into profiles (id, full_name, avatar_url) values
  ('11111111-1111-1111-1111-111111111111', 'Ada Lee', 'https://example.com/a.png');

create table agent_configs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid,
  agent_id text
);
insert into agent_configs (user_id, agent_id) values
  ('11111111-1111-1111-1111-111111111111', 'agent_legacy');
"""

COLUMNS = """
select table_name, column_name, data_type from information_schema.columns
where table_schema = $1 and table_name = any($2::text[])
"""


async def test_existing_supabase_tables_are_kept_and_extended(empty_database: str) -> None:
    """Existing tables keep their rows, columns and types, and gain the missing columns."""
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(SUPABASE_LIKE)
        uid_before = await conn.fetchval("select prosrc from pg_proc where proname = 'uid'")
        oids_before = await conn.fetch(
            "select relname, oid from pg_class where relname = any($1::text[])"
            " and relkind = 'r' order by relname",
            ["users", "customer_call_logs", "profiles", "agent_configs"],
        )
        await migrate(empty_database)

        columns = {
            (r["table_name"], r["column_name"]): r["data_type"]
            for r in await conn.fetch(
                COLUMNS, "public", ["customer_call_logs", "profiles", "agent_configs"]
            )
        }
        # Kept as they were: nothing retyped, nothing dropped.
        assert columns[("customer_call_logs", "retell_call_id")] == "text"
        assert columns[("customer_call_logs", "from_number")] == "text"
        assert columns[("profiles", "avatar_url")] == "text"
        assert columns[("agent_configs", "agent_id")] == "text"
        # Added.
        for column in ("duration_ms", "events", "call_status", "user_id", "agent_configuration_id"):
            assert ("customer_call_logs", column) in columns, column
        assert ("profiles", "role") in columns
        assert ("profiles", "updated_at") in columns
        assert ("agent_configs", "created_at") in columns

        calls = await conn.fetch(
            "select retell_call_id, from_number, transcript, events from customer_call_logs"
            " order by retell_call_id"
        )
        assert [tuple(r) for r in calls] == [
            ("call_old_1", "+16175550187", "Hello?", "{}"),
            ("call_old_2", "+16175550188", "Hi there", "{}"),
        ]
        assert await conn.fetchval("select full_name from profiles") == "Ada Lee"
        assert await conn.fetchval("select agent_id from agent_configs") == "agent_legacy"
        assert await conn.fetchval("select count(*) from auth.users") == 2

        # Supabase's own objects are used, not replaced.
        assert await conn.fetchval("select prosrc from pg_proc where proname = 'uid'") == uid_before
        assert (
            await conn.fetch(
                "select relname, oid from pg_class where relname = any($1::text[])"
                " and relkind = 'r' order by relname",
                ["users", "customer_call_logs", "profiles", "agent_configs"],
            )
            == oids_before
        )
        user_columns = await conn.fetch(COLUMNS, "auth", ["users"])
        assert {r["column_name"] for r in user_columns} == {
            "id",
            "email",
            "raw_user_meta_data",
            "created_at",
        }
        # ... and the new tables' policies run on them: the old claim setting works.
        async with conn.transaction():
            await conn.execute("set local role authenticated")
            await conn.execute(
                "select set_config('request.jwt.claim.sub', '11111111-1111-1111-1111-111111111111',"
                " true)"
            )
            assert await conn.fetchval("select count(*) from agent_configs") == 1
            assert await conn.fetchval("select count(*) from profiles") == 1
    finally:
        await conn.close()


@pytest.mark.slow
async def test_migrate_without_database_url_uses_embedded_server(tmp_path: Path) -> None:
    """With no DATABASE_URL, migrate applies the schema to an embedded server and stops it."""
    data_dir = tmp_path / "data"
    code, lines = await _run_cli("migrate", env=_cli_env(DATA_DIR=str(data_dir)))
    assert code == 0, lines
    events = [line.get("event") for line in lines]
    assert "embedded_postgres_started" in events
    assert "embedded_postgres_stopped" in events
    done = next(line for line in lines if line.get("event") == "migrations_done")
    assert done["applied"] == len(SCHEMA_VERSIONS)
    pgdata = data_dir / "postgres"
    assert (pgdata / "PG_VERSION").exists()
    # Stopped: the server removes its pid file on a clean shutdown.
    assert not (pgdata / "postmaster.pid").exists()

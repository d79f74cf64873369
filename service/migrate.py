"""Brings a database to schema/: versioned files once each, then the definition files.

Under one advisory lock: every versioned file (`schema/NNNN_name.sql`: tables, columns, indexes,
data) not yet applied, in order, each in its own transaction; then every definition file
(`schema/definitions/NN_area.sql`: functions, triggers, views, row level security, grants) whose
checksum differs from the one it was last applied with, in order, each in its own transaction.
An applied versioned file that has changed stops the run before anything is applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from service.config import DEFAULT_CONNECT_TIMEOUT_SECONDS
from service.db import connection_arguments

log = structlog.get_logger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
DEFINITIONS = "definitions"
# Run once on a database of the old layout, before the baseline (see _upgrade_old_layout).
OLD_LAYOUT_UPGRADE = Path("upgrade") / "from_old_layout.sql"
# The ledger a database has after applying the files that the baseline replaced.
OLD_LAYOUT = {
    1: "supabase_compat",
    2: "tables",
    3: "rules",
    4: "row_level_security",
    5: "scheduling",
    6: "call_events",
    7: "availability_cache",
    8: "write_path_speed",
}
# Any constant works as long as nothing else in the database uses it for another purpose.
MIGRATION_LOCK_KEY = 7_413_200_511
_VERSIONED_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_DEFINITION_NAME = re.compile(r"^(\d{2})_([a-z0-9_]+)\.sql$")


class MigrationRefused(ValueError):
    """The schema folder or the database's ledger says migrating would be wrong; one line why."""


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return _checksum(self.sql)

    @property
    def file_name(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True)
class Definition:
    file_name: str
    sql: str

    @property
    def checksum(self) -> str:
        return _checksum(self.sql)

    @property
    def path(self) -> str:
        """The file's path under schema/, as logs and pending_changes name it."""
        return f"{DEFINITIONS}/{self.file_name}"


def _numbered(directory: Path, pattern: re.Pattern[str], form: str) -> list[tuple[int, str, Path]]:
    """The directory's .sql files as (number, name, path) in order; misnamed files, gaps and
    duplicates are refused."""
    found: list[tuple[int, str, Path]] = []
    for path in sorted(directory.glob("*.sql")):
        match = pattern.match(path.name)
        if match is None:
            raise MigrationRefused(f"schema file {path.name} is not named {form}")
        found.append((int(match[1]), match[2], path))
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise MigrationRefused(
            f"{directory.name}/ files must be numbered 1..N without gaps, found {numbers}"
        )
    return found


def load_migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """Read `NNNN_name.sql` files in version order; a gap or duplicate version is an error."""
    return [
        Migration(version, name, path.read_text(encoding="utf-8"))
        for version, name, path in _numbered(directory, _VERSIONED_NAME, "NNNN_description.sql")
    ]


def load_definitions(directory: Path = SCHEMA_DIR) -> list[Definition]:
    """Read `definitions/NN_area.sql` in order (none when the folder is absent)."""
    folder = directory / DEFINITIONS
    if not folder.is_dir():
        return []
    return [
        Definition(path.name, path.read_text(encoding="utf-8"))
        for _, _, path in _numbered(folder, _DEFINITION_NAME, "NN_area.sql")
    ]


CREATE_LEDGERS = """
create table if not exists schema_migrations (
  version integer primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
);
create table if not exists schema_definitions (
  file_name text primary key,
  checksum text not null,
  applied_at timestamptz not null default now()
);
"""

# On Supabase every public table is reachable through its HTTP API; with row level security on
# and no policy, only the owner (the migrating role) sees the ledgers. Enabling it again would
# rewrite the table's catalog row on every run, so only where it is off.
UNLOCKED_LEDGERS = """
select relname from pg_class
where oid in ('schema_migrations'::regclass, 'schema_definitions'::regclass)
  and not relrowsecurity
"""

RECORD_MIGRATION = "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)"
RECORD_DEFINITION = """
insert into schema_definitions (file_name, checksum) values ($1, $2)
on conflict (file_name) do update set checksum = excluded.checksum, applied_at = now()
"""


async def _ledgers(conn: asyncpg.Connection) -> tuple[dict[int, tuple[str, str]], dict[str, str]]:
    """What the database has applied: versions as (name, checksum), definitions' checksums.

    Empty for a ledger that does not exist yet."""
    migrations: dict[int, tuple[str, str]] = {}
    definitions: dict[str, str] = {}
    if await conn.fetchval("select to_regclass('schema_migrations') is not null"):
        rows = await conn.fetch("select version, name, checksum from schema_migrations")
        migrations = {row["version"]: (row["name"], row["checksum"]) for row in rows}
    if await conn.fetchval("select to_regclass('schema_definitions') is not null"):
        rows = await conn.fetch("select file_name, checksum from schema_definitions")
        definitions = {row["file_name"]: row["checksum"] for row in rows}
    return migrations, definitions


def _is_old_layout(applied: dict[int, tuple[str, str]]) -> bool:
    """Whether the ledger is the old layout's: version 1 under its old name."""
    if applied.get(1, ("", ""))[0] != OLD_LAYOUT[1]:
        return False
    if {version: name for version, (name, _) in applied.items()} != OLD_LAYOUT:
        raise MigrationRefused(
            "this database applied only part of the old schema layout"
            f" (versions {sorted(applied)}); migrate an empty database instead"
        )
    return True


def _refuse_changed(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    for migration in migrations:
        if migration.version not in applied:
            continue
        name, checksum = applied[migration.version]
        if name != migration.name:
            raise MigrationRefused(
                f"schema/{migration.file_name}: this database applied version"
                f" {migration.version} as {migration.version:04d}_{name}.sql"
            )
        if checksum != migration.checksum:
            raise MigrationRefused(
                f"schema/{migration.file_name} has changed since this database applied it;"
                " an applied migration is never edited: restore it and put the change in a new"
                " versioned file or a definition file"
            )


async def _upgrade_old_layout(
    conn: asyncpg.Connection, baseline: Migration, directory: Path
) -> None:
    """The one step from the old layout to the baseline, keeping every clinic row.

    In one transaction: the old layout's functions, triggers and views are dropped (so nothing
    of it outlives the new definitions), the baseline runs over the existing tables (it creates
    only what is absent) and the ledger becomes the baseline's; the definition files follow."""
    upgrade = (directory / OLD_LAYOUT_UPGRADE).read_text(encoding="utf-8")
    async with conn.transaction():
        await conn.execute(upgrade)
        await conn.execute(baseline.sql)
        await conn.execute("delete from schema_migrations")
        await conn.execute("delete from schema_definitions")
        await conn.execute(RECORD_MIGRATION, baseline.version, baseline.name, baseline.checksum)
    log.info("old_layout_upgraded", baseline=baseline.file_name)


async def _apply(conn: asyncpg.Connection, sql: str, record: str, *args: object) -> None:
    async with conn.transaction():
        await conn.execute(sql)
        await conn.execute(record, *args)


async def migrate(
    url: str,
    directory: Path = SCHEMA_DIR,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
) -> list[int]:
    """Apply every pending file; return the versions of the versioned files applied by this call."""
    migrations = load_migrations(directory)
    definitions = load_definitions(directory)
    conn = await asyncpg.connect(
        **connection_arguments(url, timeout=connect_timeout, statement_cache_size=0)
    )
    applied_now: list[int] = []
    definitions_now: list[str] = []
    try:
        # A session-level lock: a second process waits here, then finds nothing left to do.
        await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(CREATE_LEDGERS)
            for row in await conn.fetch(UNLOCKED_LEDGERS):
                await conn.execute(f'alter table "{row["relname"]}" enable row level security')
            applied, _ = await _ledgers(conn)
            if migrations and _is_old_layout(applied):
                await _upgrade_old_layout(conn, migrations[0], directory)
                applied, _ = await _ledgers(conn)
            _refuse_changed(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                try:
                    await _apply(
                        conn,
                        migration.sql,
                        RECORD_MIGRATION,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                except asyncpg.PostgresError as error:
                    # Say which file failed: the server's message alone does not.
                    log.error(
                        "migration_failed",
                        version=migration.version,
                        name=migration.name,
                        error=str(error),
                        sqlstate=error.sqlstate,
                    )
                    raise
                applied_now.append(migration.version)
                log.info("migration_applied", version=migration.version, name=migration.name)
            _, defined = await _ledgers(conn)
            for definition in definitions:
                # After a versioned file, all of them: it may have dropped what one creates
                # (a view in the way of a column change, a trigger with its table).
                if not applied_now and defined.get(definition.file_name) == definition.checksum:
                    continue
                try:
                    await _apply(
                        conn,
                        definition.sql,
                        RECORD_DEFINITION,
                        definition.file_name,
                        definition.checksum,
                    )
                except asyncpg.PostgresError as error:
                    log.error(
                        "definition_failed",
                        file=definition.path,
                        error=str(error),
                        sqlstate=error.sqlstate,
                    )
                    raise
                definitions_now.append(definition.path)
                log.info("definition_applied", file=definition.path)
        finally:
            await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    log.info(
        "migrations_done",
        applied=len(applied_now),
        total=len(migrations),
        definitions_applied=len(definitions_now),
    )
    return applied_now


async def pending_changes(conn: asyncpg.Connection, directory: Path = SCHEMA_DIR) -> list[str]:
    """The shipped files (paths under schema/) this database has not applied as they are now.

    Versioned files not applied or applied with another checksum, then definition files likewise;
    empty when the database is up to date. A database without ledgers has everything pending."""
    migrations, definitions = await _ledgers(conn)
    pending = [
        m.file_name
        for m in load_migrations(directory)
        if migrations.get(m.version) != (m.name, m.checksum)
    ]
    pending += [
        d.path for d in load_definitions(directory) if definitions.get(d.file_name) != d.checksum
    ]
    return pending

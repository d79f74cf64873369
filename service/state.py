"""What handlers share: the lifespan's resources, and the guarded way to ask the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import structlog
from starlette.requests import Request

from service import db
from service.config import Settings
from service.metrics import Metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")

# What a database the service can't work with looks like from asyncpg and the pool: dead,
# unreachable or overloaded, dropped, or refusing the service's role. Never the caller's fault:
# the app answers all of them with one 503.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,
    # A transaction pooler with the statement cache left on loses prepared statements between
    # requests: the database is unusable as configured, which is not the caller's fault.
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.InvalidCachedStatementError,
    # The server answers, but the database was dropped or the role can no longer log in.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


# How long a connection whose statement failed midway may take to be handed back (asyncpg waits
# for the server to confirm the cancel); past it the connection is dropped.
_RELEASE_TIMEOUT_SECONDS = 2.0


@dataclass
class State:
    """Opened and closed by the lifespan; reached through `state_of(request)`."""

    settings: Settings
    pool: db.Pool
    clock: Callable[[], datetime] = field(default=utc_now)
    metrics: Metrics = field(default_factory=Metrics)
    _releasing: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    # Until when (time.monotonic()) /readyz takes the schema as complete without asking again.
    schema_current_until: float = 0.0

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run one statement on a pooled connection within the service's deadline.

        A database that is down, unreachable, or slower than the deadline raises one of
        DATABASE_UNAVAILABLE (a 503), never a hang.
        """
        return await self.fetchval_within(self.settings.request_deadline_seconds, sql, *args)

    async def fetchval_within(self, seconds: float, sql: str, *args: Any) -> Any:
        """One statement, waiting for a connection included, all within `seconds`.

        Raises one of DATABASE_UNAVAILABLE when the database can't answer in time.
        """
        return await self.using_connection(
            seconds, lambda conn, left: conn.fetchval(sql, *args, timeout=left)
        )

    async def using_connection(
        self, seconds: float, work: Callable[[Any, float], Awaitable[T]]
    ) -> T:
        """`work(connection, seconds_left)` on a pooled connection, waiting for it included.

        A connection whose work failed or timed out is handed back in the background: asyncpg
        first cancels the statement on the server (so a late commit can't follow a 503), and
        drops a connection that is broken, so the next request opens a fresh one.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        with self.metrics.pool_waiting.track_inprogress():
            conn = await self.pool.acquire(
                timeout=min(seconds, self.settings.pool_acquire_timeout_seconds)
            )
        try:
            value = await work(conn, max(deadline - loop.time(), 0.001))
        except BaseException:
            task = asyncio.create_task(self._release(conn))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
            raise
        # The answer is in hand (a booking may be committed): a failed release only drops the
        # connection, it never turns the answer into an error.
        await self._release(conn)
        return value

    async def _release(self, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        try:
            await self.pool.release(conn, timeout=_RELEASE_TIMEOUT_SECONDS)
        except Exception as exc:
            # Whatever failed, asyncpg has terminated the connection; the pool opens a new one.
            log.info("database_connection_dropped", error=type(exc).__name__)


def state_of(request: Request) -> State:
    state: State = request.app.state.service
    return state

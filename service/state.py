"""What handlers share: the lifespan's resources, and the guarded way to ask the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import httpx
import structlog
from starlette.requests import Request

from service import db
from service.config import Settings
from service.errors import ServiceError
from service.metrics import Metrics
from service.retell import read_body, signature_is_valid

log = structlog.get_logger(__name__)

T = TypeVar("T")

# What a dead, unreachable or overloaded database looks like from asyncpg and the pool.
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
    http: httpx.AsyncClient
    clock: Callable[[], datetime] = field(default=utc_now)
    metrics: Metrics = field(default_factory=Metrics)
    _releasing: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run one statement on a pooled connection within the service's deadline.

        A database that is down, unreachable, or slower than the deadline is a 503, never a hang.
        """
        try:
            return await self.fetchval_within(self.settings.request_deadline_seconds, sql, *args)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("database_unavailable", error=type(exc).__name__)
            raise ServiceError(
                503,
                "database_unavailable",
                "The scheduling database is not answering right now; please try again.",
            ) from None

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

    async def _release(self, conn: Any) -> None:
        try:
            await self.pool.release(conn, timeout=_RELEASE_TIMEOUT_SECONDS)
        except Exception as exc:
            # Whatever failed, asyncpg has terminated the connection; the pool opens a new one.
            log.info("database_connection_dropped", error=type(exc).__name__)


def state_of(request: Request) -> State:
    state: State = request.app.state.service
    return state


async def signed_body(request: Request, limit: int) -> bytes:
    """The raw body of a /retell/* request, after its size and its signature are checked."""
    state = state_of(request)
    raw = await read_body(request, limit)
    settings = state.settings
    if settings.insecure_skip_signature_check:
        return raw
    key = settings.retell_api_key.get_secret_value() if settings.retell_api_key else ""
    if not key or not signature_is_valid(
        raw,
        request.headers.get("x-retell-signature"),
        key,
        tolerance_seconds=settings.signature_tolerance_seconds,
        now_ms=int(state.clock().timestamp() * 1000),
    ):
        raise ServiceError(401, "invalid_signature", "The X-Retell-Signature header is not valid.")
    return raw

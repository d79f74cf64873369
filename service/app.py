"""create_app(settings): the lifespan's resources, the URL map, middleware and error handlers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import db, functions
from service.config import Settings
from service.errors import ServiceError, error_response, json_response
from service.state import DATABASE_UNAVAILABLE, State, state_of, utc_now

log = structlog.get_logger("service.request")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = state_of(request)
    try:
        async with asyncio.timeout(state.settings.ready_timeout_seconds):
            async with state.pool.acquire() as conn:
                await conn.fetchval("select 1")
    except TimeoutError:
        return _not_ready("timeout", "The database did not answer within the time limit.")
    except DATABASE_REFUSED:
        return _not_ready("unreachable", "The database cannot be reached.")
    except asyncpg.PostgresError as exc:
        return _not_ready("error", f"The database answered with an error ({type(exc).__name__}).")
    return json_response({"status": "ready", "checks": {"database": "ok"}})


# Besides a dead or slow server: a database that was dropped or a role that can no longer log in
# (the server answers, but the service cannot work with it). Never the client's fault: 503.
DATABASE_REFUSED: tuple[type[BaseException], ...] = (
    *DATABASE_UNAVAILABLE,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


def _not_ready(check: str, message: str) -> Response:
    return json_response(
        {"error": "not_ready", "message": message, "checks": {"database": check}}, 503
    )


class CanonicalLogLine:
    """One log line per request: method, path, status, latency, plus what handlers bound."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        structlog.contextvars.clear_contextvars()
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


async def on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.code, exc.message)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def on_database_unavailable(request: Request, exc: Exception) -> Response:
    structlog.get_logger(__name__).warning("database_unavailable", error=type(exc).__name__)
    return error_response(
        503, "database_unavailable", "The scheduling database is not answering right now."
    )


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    structlog.get_logger(__name__).exception("unhandled_error")
    return error_response(500, "internal_error", "Something went wrong on our side.")


def routes() -> list[Route]:
    """The whole URL map."""
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/retell/functions/{function_name}", functions.endpoint, methods=["POST"]),
    ]


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Starlette:
    """Build the ASGI app; the database pool and HTTP client open in its lifespan."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the CLI fills it in)")
    database_url = settings.database_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            pool = await db.create_pool(database_url, settings)
        except DATABASE_REFUSED as exc:
            # Start anyway, connecting on demand: /healthz answers and /readyz says what is wrong,
            # instead of a process that dies before an orchestrator can ask it anything.
            structlog.get_logger(__name__).warning(
                "database_unavailable_at_start", error=type(exc).__name__
            )
            pool = await db.create_pool(
                database_url, settings.model_copy(update={"pool_min_size": 0})
            )
        http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
        app.state.service = State(settings=settings, pool=pool, http=http, clock=clock)
        if settings.insecure_skip_signature_check:
            structlog.get_logger(__name__).warning(
                "signature_check_disabled",
                setting="INSECURE_SKIP_SIGNATURE_CHECK",
                effect="unsigned /retell/* requests are accepted",
            )
        try:
            yield
        finally:
            await http.aclose()
            await asyncio.wait_for(pool.close(), timeout=5)

    return Starlette(
        routes=routes(),
        middleware=[Middleware(CanonicalLogLine)],
        exception_handlers={
            ServiceError: on_service_error,
            HTTPException: on_http_error,
            # Registered per class (not caught under Exception) so that Starlette answers them
            # as handled errors rather than re-raising them to the server as crashes.
            **dict.fromkeys(DATABASE_REFUSED, on_database_unavailable),
            Exception: on_unexpected_error,
        },
        lifespan=lifespan,
    )

"""create_app(settings): the lifespan's resources, the URL map, middleware and error handlers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import db, functions, logs, metrics, migrate, webhooks
from service.config import Settings
from service.errors import ServiceError, error_response, json_response
from service.state import DATABASE_UNAVAILABLE, State, state_of, utc_now

log = structlog.get_logger("service.request")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


# A schema found complete stays so (migrations only move forward): for this long after a check
# found nothing pending, /readyz asks the database only whether it answers.
SCHEMA_RECHECK_SECONDS = 30.0


async def _pending_changes(conn: db.Connection, seconds: float) -> list[str]:
    pending: list[str] = await asyncio.wait_for(migrate.pending_changes(conn), seconds)
    return pending


async def _answers(conn: db.Connection, seconds: float) -> list[str]:
    await conn.fetchval("select 1", timeout=seconds)
    return []


async def readyz(request: Request) -> Response:
    """Ready: the database answers, and every schema change this code ships is applied to it."""
    state = state_of(request)
    checked_at = time.monotonic()
    recent = checked_at < state.schema_current_until
    try:
        pending = await state.using_connection(
            state.settings.ready_timeout_seconds, _answers if recent else _pending_changes
        )
    except TimeoutError:
        return _not_ready("timeout", "The database did not answer within the time limit.")
    except DATABASE_UNAVAILABLE:
        return _not_ready("unreachable", "The database cannot be reached.")
    except asyncpg.PostgresError as exc:
        return _not_ready("error", f"The database answered with an error ({type(exc).__name__}).")
    if not pending and not recent:
        state.schema_current_until = checked_at + SCHEMA_RECHECK_SECONDS
    if pending:
        return json_response(
            {
                "error": "not_ready",
                "message": (
                    f"The database lacks {len(pending)} schema change(s) this release ships: "
                    f"{', '.join(pending)}. Run `python -m service migrate`."
                ),
                "checks": {"database": "ok", "migrations": "pending"},
                "pending_migrations": pending,
            },
            503,
        )
    return json_response({"status": "ready", "checks": {"database": "ok", "migrations": "ok"}})


def _not_ready(check: str, message: str) -> Response:
    return json_response(
        {"error": "not_ready", "message": message, "checks": {"database": check}}, 503
    )


class CanonicalLogLine:
    """One log line per request: method, path, status, latency, plus what handlers bound.

    The same measurements feed the request counters and latency histograms.
    """

    def __init__(self, app: ASGIApp, metrics: metrics.Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            elapsed = time.perf_counter() - started
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                latency_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()
            endpoint, function = _labels(scope)
            self.metrics.request_done(endpoint, function, status, elapsed)


def _labels(scope: Scope) -> tuple[str, str]:
    """The route's path template and the function name (only known ones: bounded labels)."""
    route = scope.get("route")
    endpoint = getattr(route, "path", None) or "unmatched"
    name = scope.get("path_params", {}).get("function_name")
    if name is None:
        return endpoint, ""
    return endpoint, name if name in functions.FUNCTIONS else "unknown"


async def on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.code, exc.message)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    # Starlette's own headers for the status, e.g. a 405's `Allow`.
    response.headers.update(exc.headers or {})
    return response


async def on_database_unavailable(request: Request, exc: Exception) -> Response:
    structlog.get_logger(__name__).warning("database_unavailable", error=type(exc).__name__)
    return error_response(
        503,
        "database_unavailable",
        "The scheduling database is not answering right now; please try again.",
    )


async def on_unstorable_value(request: Request, exc: Exception) -> Response:
    # A value the edge let through but PostgreSQL can't hold (out of range, too long to index):
    # the request's fault, and the failed statement rolled back, so nothing was stored.
    assert isinstance(exc, asyncpg.PostgresError)
    structlog.get_logger(__name__).warning("unstorable_value", sqlstate=exc.sqlstate)
    return error_response(
        422, "unstorable_value", "The request holds a value the database cannot store."
    )


# SQLSTATE classes 22 (data exception) and 54 (program limit exceeded, e.g. an index row size).
UNSTORABLE_VALUE: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
)


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer: one line, and the status logged is nginx's "client closed".
    structlog.get_logger(__name__).info("client_disconnected")
    return Response(status_code=499)


class CatchUnexpected:
    """Answers an unexpected exception with a JSON 500, logged once with its traceback.

    Starlette's handler for `Exception` re-raises to the server after answering, so uvicorn
    logs it a second time and closes the keep-alive connection; caught here it goes no further.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            if started:
                # Half an answer is out: only the server can end it (it logs the exception and
                # closes the connection).
                raise
            structlog.get_logger(__name__).exception("unhandled_error")
            response = error_response(500, "internal_error", "Something went wrong on our side.")
            await response(scope, receive, send)


def routes() -> list[Route]:
    """The whole URL map."""
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/retell/functions/{function_name}", functions.endpoint, methods=["POST"]),
        Route("/retell/webhook", webhooks.call_event, methods=["POST"]),
        Route("/retell/inbound", webhooks.inbound, methods=["POST"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Starlette:
    """Build the ASGI app; the database pool opens in its lifespan."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the CLI fills it in)")
    database_url = settings.database_url
    # Per app, not per module: two apps in one process (tests) keep separate counts.
    app_metrics = metrics.Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await db.create_pool(database_url, settings)
        warming = asyncio.create_task(
            db.warm_pool(pool, settings.pool_min_size, settings.request_deadline_seconds)
        )
        # A database that answers is warm before the first request; one that doesn't delays
        # the start by at most this, and the pool keeps warming in the background.
        await asyncio.wait({warming}, timeout=settings.ready_timeout_seconds)
        app.state.service = State(settings=settings, pool=pool, clock=clock, metrics=app_metrics)
        app_metrics.watch_pool(pool)
        if settings.retell_api_key is not None:
            logs.hide(settings.retell_api_key.get_secret_value())
        if settings.insecure_skip_signature_check:
            structlog.get_logger(__name__).warning(
                "signature_check_disabled",
                setting="INSECURE_SKIP_SIGNATURE_CHECK",
                effect="unsigned /retell/* requests are accepted",
            )
        try:
            yield
        finally:
            app_metrics.watch_pool(None)
            warming.cancel()
            await db.close_pool(pool, within_seconds=3)

    app = Starlette(
        routes=routes(),
        # The request line sees the 500 that CatchUnexpected answers.
        middleware=[Middleware(CanonicalLogLine, metrics=app_metrics), Middleware(CatchUnexpected)],
        exception_handlers={
            ServiceError: on_service_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_client_disconnect,
            # Registered per class (not caught under Exception) so that Starlette answers them
            # as handled errors rather than re-raising them to the server as crashes.
            **dict.fromkeys(DATABASE_UNAVAILABLE, on_database_unavailable),
            **dict.fromkeys(UNSTORABLE_VALUE, on_unstorable_value),
        },
        lifespan=lifespan,
    )
    app.state.metrics = app_metrics
    return app

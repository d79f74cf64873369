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
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import db, functions, logs, metrics, webhooks
from service.config import Settings
from service.errors import ServiceError, error_response, json_response
from service.state import DATABASE_UNAVAILABLE, State, state_of, utc_now

log = structlog.get_logger("service.request")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


READY_SQL = "select 1"


async def readyz(request: Request) -> Response:
    state = state_of(request)
    try:
        await state.fetchval_within(state.settings.ready_timeout_seconds, READY_SQL)
    except TimeoutError:
        return _not_ready("timeout", "The database did not answer within the time limit.")
    except DATABASE_UNAVAILABLE:
        return _not_ready("unreachable", "The database cannot be reached.")
    except asyncpg.PostgresError as exc:
        return _not_ready("error", f"The database answered with an error ({type(exc).__name__}).")
    return json_response({"status": "ready", "checks": {"database": "ok"}})


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
    return error_response(exc.status_code, code, str(exc.detail))


async def on_database_unavailable(request: Request, exc: Exception) -> Response:
    structlog.get_logger(__name__).warning("database_unavailable", error=type(exc).__name__)
    return error_response(
        503,
        "database_unavailable",
        "The scheduling database is not answering right now; please try again.",
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
        middleware=[Middleware(CanonicalLogLine, metrics=app_metrics)],
        exception_handlers={
            ServiceError: on_service_error,
            HTTPException: on_http_error,
            # Registered per class (not caught under Exception) so that Starlette answers them
            # as handled errors rather than re-raising them to the server as crashes.
            **dict.fromkeys(DATABASE_UNAVAILABLE, on_database_unavailable),
            Exception: on_unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.metrics = app_metrics
    return app

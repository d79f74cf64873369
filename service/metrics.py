"""Prometheus metrics: one registry per app, so several apps (tests) never share counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from service.db import Pool

log = structlog.get_logger(__name__)

# Most answers take 1-100 ms; the tail up to the 3 s deadline still needs a bucket of its own.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    3.0,
    10.0,
)

# Call events Retell sends; anything else is counted as "other" to keep the label set bounded.
WEBHOOK_EVENTS = frozenset(
    {
        "call_started",
        "call_ended",
        "call_analyzed",
        "call_inbound",
        "transcript_updated",
        "transfer_started",
        "transfer_bridged",
        "transfer_cancelled",
        "transfer_ended",
    }
)

# Functions whose results count as bookings made or refused.
BOOKING_FUNCTIONS = frozenset({"book_appointment", "reschedule_appointment"})


class PoolCollector(Collector):
    """Reads the database pool's sizes at scrape time; nothing is kept between scrapes."""

    def __init__(self) -> None:
        self.pool: Pool | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.pool
        if pool is None:
            return
        size, idle = pool.get_size(), pool.get_idle_size()
        connections = GaugeMetricFamily(
            "db_pool_connections", "Database pool connections by state.", labels=["state"]
        )
        connections.add_metric(["in_use"], size - idle)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily(
            "db_pool_max_connections", "The pool's maximum size.", value=pool.get_max_size()
        )


class Metrics:
    """The service's counters, histograms and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "requests",
            "HTTP requests answered, by route, function and status.",
            ["endpoint", "function", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "Time from the request's arrival to its answer, by route and function.",
            ["endpoint", "function"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bookings = Counter(
            "bookings",
            "Booking and move answers: booked, or refused by reason (a retry is counted again).",
            ["function", "outcome", "reason"],
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "webhook_events",
            "Webhook events by outcome: stored, duplicate (absorbed), ignored, unknown_agent, "
            "other_clinic (the call id is another clinic's); "
            "call_inbound: answered, unknown_agent, fallback.",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.pool_waiting = Gauge(
            "db_pool_waiting",
            "Requests waiting for a database connection right now.",
            registry=self.registry,
        )
        self.notifications = Gauge(
            "notifications",
            "Outbox rows waiting to be delivered (pending) or given up on (failed), read from "
            "the database at scrape time.",
            ["status"],
            registry=self.registry,
        )
        self.notifications_overdue = Gauge(
            "notifications_overdue_seconds",
            "How long the oldest due notification has waited (0: none due); grows while no "
            "worker runs.",
            registry=self.registry,
        )
        self.pool = PoolCollector()
        self.registry.register(self.pool)
        # Series kept once looked up: labels() takes a lock and checks its arguments on every
        # call. Every label set is already bounded (routes, known functions, statuses, reasons).
        self._series: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}

    def _labelled(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (metric, labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series

    def watch_pool(self, pool: Pool | None) -> None:
        """Report this pool's sizes from now on (None: stop, e.g. once it is closed)."""
        self.pool.pool = pool

    def request_done(self, endpoint: str, function: str, status: int, seconds: float) -> None:
        self._labelled(self.requests, endpoint, function, str(status)).inc()
        self._labelled(self.latency, endpoint, function).observe(seconds)

    def function_result(self, function: str, body: dict[str, Any]) -> None:
        """Count a booking or a refused one, from the result the agent receives."""
        if function not in BOOKING_FUNCTIONS:
            return
        if body.get("booked"):
            self._labelled(self.bookings, function, "booked", "").inc()
        else:
            reason = str(body.get("reason") or "invalid_args")
            self._labelled(self.bookings, function, "refused", reason).inc()

    def webhook_event(self, event: str, outcome: str) -> None:
        """Count one webhook event: stored, duplicate, ignored, unknown_agent, other_clinic; for
        call_inbound answered, unknown_agent or fallback (Retell's defaults were sent)."""
        label = event if event in WEBHOOK_EVENTS else "other"
        self._labelled(self.webhook_events, label, outcome).inc()

    def outbox(self, figures: list[float]) -> None:
        """Pending count, failed count, seconds the oldest due row has waited (OUTBOX_FIGURES)."""
        pending, failed, overdue = figures
        self._labelled(self.notifications, "pending").set(pending)
        self._labelled(self.notifications, "failed").set(failed)
        self.notifications_overdue.set(overdue)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


# Both partial indexes of schema's notifications (pending, failed) answer this.
OUTBOX_FIGURES = """
select array[count(*) filter (where status = 'pending'),
             count(*) filter (where status = 'failed'),
             coalesce(extract(epoch from now() - min(due_at) filter (
               where status = 'pending' and due_at <= now())), 0)]::float8[]
from notifications
where status in ('pending', 'failed')
"""


async def endpoint(request: Request) -> Response:
    """GET /metrics in Prometheus' text format, the outbox's figures read from the database."""
    # Imported here: service.state builds on this module.
    from service.state import DATABASE_UNAVAILABLE, state_of

    failures: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)
    metrics = metrics_of(request)
    state = state_of(request)
    try:
        figures = await state.fetchval_within(state.settings.ready_timeout_seconds, OUTBOX_FIGURES)
    except failures as exc:
        # The process's own figures still count; the outbox's stay as last read.
        log.warning("outbox_figures_unavailable", error=type(exc).__name__)
    else:
        metrics.outbox(figures)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

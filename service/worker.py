"""`python -m service worker`: delivers the outbox (CONTRACT section 7) to the clinics' channels.

Why a worker of our own rather than a queue library: the notification rows must be written by
the database functions the custom functions call (PL/pgSQL, inside their one round trip and
their transaction), and each row must keep one id across attempts, which is the webhook-id a
receiver drops duplicates by. pgqueuer (asyncpg-native, the maintained candidate) enqueues
through `Queries.enqueue`, a Python call that builds its INSERT (into its own `pgqueuer` and
`pgqueuer_log` tables, installed by its own `pgq install`) in Python; doing the same from
PL/pgSQL would mean writing into another package's private tables, whose shape its upgrades
change (verified against pgqueuer 1.6: `adapters/persistence/qb.py` builds the INSERT, which
also writes its log table). Its retries (`DatabaseRetryEntrypointExecutor`) would fit; what we
would keep from it is small next to what it costs: a claim with `for update skip locked`, a
lease, LISTEN/NOTIFY and a backoff are the ~200 lines below, on the tables of schema/.

Delivery is at least once: a worker that dies after the receiver got a notification but
before the row is marked delivered sends it again after the lease, with the same id.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import structlog

from service import channels, db, logs
from service.channels import DeliveryError, Notification
from service.config import Settings, secret_value
from service.state import DATABASE_UNAVAILABLE

log = structlog.get_logger(__name__)

CHANNEL = "notifications"
LISTEN_FAILURES: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)

# The due rows, oldest first; another worker's claimed rows are skipped, not waited for.
# Claiming moves due_at past the lease: a worker that dies leaves its rows to come due again.
CLAIM = """
with due as (
  select n.id from notifications n
  where n.status = 'pending' and n.due_at <= now()
  order by n.due_at
  limit $1
  for update skip locked
), claimed as (
  update notifications n
  set attempts = n.attempts + 1, due_at = now() + make_interval(secs => $2),
      last_attempt_at = now()
  from due
  where n.id = due.id
  returning n.id, n.endpoint_id, n.event, n.data, n.attempts, n.created_at, n.voicemail_id,
            n.reminder
)
select c.id, c.event, c.data, c.attempts, c.created_at, e.kind, e.target, e.secret,
       e.is_active,
       c.reminder is not null
         and (v.id is null or v.status <> 'unread' or v.read_at is not null) as already_read
from claimed c
left join notification_endpoints e on e.id = c.endpoint_id
left join voicemails v on v.id = c.voicemail_id
"""

# The outcome of one attempt. A success is recorded whoever holds the row now; a failure only
# by the attempt that still holds it (not one whose lease ran out and was claimed again).
SETTLE = """
update notifications
set status = $3, due_at = now() + make_interval(secs => $4), last_error = $5,
    delivered_at = case when $3 = 'delivered' then now() end
where id = $1 and status = 'pending' and ($3 = 'delivered' or attempts = $2)
"""

# Seconds until the next pending row comes due (null: none pending).
NEXT_DUE = """
select extract(epoch from min(due_at) - now())::float8 from notifications where status = 'pending'
"""


def retry_delay(
    attempts: int, settings: Settings, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: base x 2^(attempts-1), capped, then 50-100% of that.

    The jitter spreads the retries of many rows that failed together (a receiver that was
    down) instead of sending them back at the same instant.
    """
    doubled: float = settings.notifications_retry_base_seconds * 2.0 ** min(attempts - 1, 30)
    ceiling = min(settings.notifications_retry_cap_seconds, doubled)
    return ceiling * (0.5 + 0.5 * rand())


class Worker:
    """Claims due notifications in batches and delivers each on its channel."""

    def __init__(
        self,
        settings: Settings,
        pool: db.Pool,
        http: httpx.AsyncClient,
        *,
        listen_url: str | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.http = http
        self.listen_url = listen_url
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; a batch in flight is finished first."""
        listener = asyncio.create_task(self._listen(stop)) if self.listen_url else None
        log.info("worker_started", worker=self.name, batch=self.settings.worker_batch_size)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    claimed = await self.deliver_due()
                    if claimed >= self.settings.worker_batch_size:
                        continue
                    wait = await self._seconds_to_next_due()
                except DATABASE_UNAVAILABLE as exc:
                    log.warning("worker_database_unavailable", error=type(exc).__name__)
                    wait = self.settings.worker_poll_seconds
                except asyncpg.PostgresError as exc:
                    # E.g. a database not migrated yet: say so, keep trying.
                    # The sqlstate, not the message: PostgreSQL's messages may quote row values.
                    log.error(
                        "worker_database_error", error=type(exc).__name__, sqlstate=exc.sqlstate
                    )
                    wait = self.settings.worker_poll_seconds
                except Exception:
                    # Whatever else went wrong in a round, the next one may go right: a worker
                    # that exits stops every clinic's notifications.
                    log.exception("worker_round_failed")
                    wait = self.settings.worker_poll_seconds
                await _first_of(stop, self._wake, seconds=wait)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            log.info("worker_stopped", worker=self.name)

    async def deliver_due(self) -> int:
        """Claim one batch of due notifications and attempt each; return how many were claimed."""
        timeout = self.settings.request_deadline_seconds
        async with self.pool.acquire(timeout=timeout) as conn:
            rows = await conn.fetch(
                CLAIM,
                self.settings.worker_batch_size,
                self.settings.worker_lease_seconds,
                timeout=timeout,
            )
        await asyncio.gather(*(self._attempt(row) for row in rows))
        return len(rows)

    async def _seconds_to_next_due(self) -> float:
        poll = self.settings.worker_poll_seconds
        seconds: float | None = await self.pool.fetchval(
            NEXT_DUE, timeout=self.settings.request_deadline_seconds
        )
        if seconds is None:
            return poll
        return min(max(seconds, 0.0), poll)

    async def _attempt(self, row: asyncpg.Record) -> None:
        fields: dict[str, Any] = {
            "notification_id": str(row["id"]),
            "type": row["event"],
            "kind": row["kind"],
            "attempt": row["attempts"],
        }
        if row["kind"] is None:
            # Its endpoint was deleted since (the outbox keeps no key to it).
            await self._settle(row["id"], row["attempts"], "skipped", 0, "endpoint deleted", fields)
            return
        notification = Notification.model_validate(dict(row))
        if not notification.is_active:
            await self._settle(
                notification.id, notification.attempts, "skipped", 0, "endpoint turned off", fields
            )
            return
        if notification.already_read:
            await self._settle(
                notification.id, notification.attempts, "skipped", 0, "message read", fields
            )
            return
        started = time.perf_counter()
        try:
            try:
                await channels.deliver(self.http, notification, self.settings, datetime.now(UTC))
            except DeliveryError:
                raise
            except Exception as exc:
                # A bug or a row we can't render: this notification fails on its own (retried,
                # then failed), the worker and the rest of the batch go on.
                log.exception("notification_attempt_crashed", **fields)
                raise DeliveryError(f"internal error ({type(exc).__name__})") from exc
        except DeliveryError as exc:
            fields["error"] = exc.reason
            if exc.permanent or notification.attempts >= self.settings.notifications_max_attempts:
                await self._settle(
                    notification.id, notification.attempts, "failed", 0, exc.reason, fields
                )
            else:
                delay = retry_delay(notification.attempts, self.settings)
                fields["retry_in_s"] = round(delay, 1)
                await self._settle(
                    notification.id, notification.attempts, "pending", delay, exc.reason, fields
                )
            return
        fields["attempt_ms"] = round((time.perf_counter() - started) * 1000, 1)
        fields["since_event_ms"] = round(
            (datetime.now(UTC) - notification.created_at).total_seconds() * 1000, 1
        )
        await self._settle(notification.id, notification.attempts, "delivered", 0, None, fields)

    async def _settle(
        self,
        notification_id: uuid.UUID,
        attempts: int,
        status: str,
        delay: float,
        error: str | None,
        fields: dict[str, Any],
    ) -> None:
        event = {
            "delivered": "notification_delivered",
            "pending": "notification_retry",
            "failed": "notification_failed",
            "skipped": "notification_skipped",
        }[status]
        try:
            await self.pool.execute(
                SETTLE,
                notification_id,
                attempts,
                status,
                delay,
                error,
                timeout=self.settings.request_deadline_seconds,
            )
        except DATABASE_UNAVAILABLE as exc:
            # The row is still leased: it comes due again after the lease and is attempted
            # again (a delivered one is then delivered twice, with the same id).
            log.warning("notification_outcome_not_saved", error=type(exc).__name__, **fields)
            return
        if status == "failed":
            log.error(event, **fields)
        elif status == "pending":
            log.warning(event, **fields)
        else:
            log.info(event, **fields)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Keep a LISTEN connection open, waking the loop at each commit that queued rows.

        Reconnects when the connection dies (checked every poll interval); the loop polls
        meanwhile, so a lost connection only delays delivery to the poll interval.
        """
        assert self.listen_url is not None
        poll = self.settings.worker_poll_seconds
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    **db.connection_arguments(
                        self.listen_url,
                        timeout=self.settings.request_deadline_seconds,
                        statement_cache_size=0,
                    )
                )
                await conn.add_listener(CHANNEL, self._notified)
                # Rows committed while nobody listened: look now.
                self._wake.set()
                log.info("worker_listening", channel=CHANNEL)
                while not stop.is_set():
                    await _first_of(stop, seconds=poll)
                    await conn.execute("select 1", timeout=self.settings.request_deadline_seconds)
            except LISTEN_FAILURES as exc:
                log.info("worker_listen_lost", error=type(exc).__name__)
                await _first_of(stop, seconds=poll)
            finally:
                if conn is not None:
                    conn.terminate()

    def _notified(self, *_: object) -> None:
        self._wake.set()


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Wait until any of `events` is set, or `seconds` have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def listen_url(settings: Settings, url: str) -> str | None:
    """A session connection for LISTEN: DIRECT_DATABASE_URL, else DATABASE_URL unless that is a
    transaction pooler (which hands LISTEN's connection to other clients); None: poll only."""
    if settings.direct_database_url:
        return settings.direct_database_url
    if db.wants_statement_cache_off(url):
        return None
    return url


async def run_worker(settings: Settings, url: str, stop: asyncio.Event) -> None:
    """The worker process: a small pool, an HTTP client, the LISTEN connection."""
    for secret in (settings.smtp_password, settings.twilio_auth_token):
        if value := secret_value(secret):
            logs.hide(value)
    listen = listen_url(settings, url)
    if listen is None:
        log.warning(
            "worker_polling_only",
            reason="DATABASE_URL is a transaction pooler; set DIRECT_DATABASE_URL to LISTEN",
            poll_seconds=settings.worker_poll_seconds,
        )
    pool = await db.create_pool(url, settings)
    http = httpx.AsyncClient(timeout=settings.notifications_webhook_timeout_seconds)
    try:
        await Worker(settings, pool, http, listen_url=listen).run(stop)
    finally:
        await http.aclose()
        await db.close_pool(pool, within_seconds=3)

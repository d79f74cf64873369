"""Channels, outbox rows and workers for the notification tests."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx

from service import db as service_db
from service.config import Settings
from service.worker import Worker
from tests.factories import Clinic

HOOK_URL = "https://hooks.clinic.example/receptionist"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def add_endpoint(
    conn: asyncpg.Connection,
    clinic: Clinic,
    kind: str = "webhook",
    target: str = HOOK_URL,
    **columns: Any,
) -> uuid.UUID:
    """A channel of the clinic; a webhook gets a fresh secret unless one is given."""
    values: dict[str, Any] = {
        "agent_configuration_id": clinic.configuration_id,
        "kind": kind,
        "target": target,
        **columns,
    }
    if kind == "webhook":
        values.setdefault("secret", new_secret())
    names = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    endpoint_id: uuid.UUID = await conn.fetchval(
        f"insert into notification_endpoints ({', '.join(names)}) values ({placeholders})"  # noqa: S608
        " returning id",
        *values.values(),
    )
    return endpoint_id


async def store_voicemail(
    conn: asyncpg.Connection, clinic: Clinic, *, urgent: bool = False, **columns: Any
) -> uuid.UUID:
    """A message stored and queued as leave_voicemail stores and queues one."""
    values: dict[str, Any] = {
        "agent_configuration_id": clinic.configuration_id,
        "caller_name": "James Whitaker",
        "caller_phone": "+16175550163",
        "transcript": "My crown came off and it hurts, please call me back today.",
        "subject": "Crown came off",
        "priority": "urgent" if urgent else "normal",
        **columns,
    }
    names = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    voicemail_id: uuid.UUID = await conn.fetchval(
        f"insert into voicemails ({', '.join(names)}) values ({placeholders}) returning id",  # noqa: S608
        *values.values(),
    )
    await conn.execute(
        "select enqueue_voicemail_notice(c, $2, 'call_test') from agent_configurations c"
        " where c.id = $1",
        clinic.configuration_id,
        voicemail_id,
    )
    return voicemail_id


async def outbox_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "select n.id, n.event, n.status, n.attempts, n.data, n.reminder, n.last_error,"
        " n.voicemail_id, n.appointment_id, e.kind"
        " from notifications n join notification_endpoints e on e.id = n.endpoint_id"
        " order by n.created_at, e.kind, n.reminder nulls first"
    )
    return rows


def worker_settings(settings: Settings, **overrides: Any) -> Settings:
    """Short delays for tests: retries after ~0.1 s, a 3 s lease, 1 s receiver timeout."""
    values: dict[str, Any] = {
        "notifications_retry_base_seconds": 0.1,
        "notifications_retry_cap_seconds": 0.2,
        "worker_lease_seconds": 3.0,
        "worker_poll_seconds": 0.2,
        "notifications_webhook_timeout_seconds": 1.0,
        "smtp_timeout_seconds": 2.0,
        **overrides,
    }
    return settings.model_copy(update=values)


@asynccontextmanager
async def running_pool(settings: Settings) -> AsyncIterator[service_db.Pool]:
    assert settings.database_url is not None
    pool = await service_db.create_pool(settings.database_url, settings)
    try:
        yield pool
    finally:
        await service_db.close_pool(pool, within_seconds=3)


@asynccontextmanager
async def worker(settings: Settings, *, listen: bool = False) -> AsyncIterator[Worker]:
    """A worker with a pool and an HTTP client of its own (respx sees its requests)."""
    async with running_pool(settings) as pool, httpx.AsyncClient() as http:
        yield Worker(settings, pool, http, listen_url=settings.database_url if listen else None)


async def deliver_all(w: Worker, rounds: int = 50) -> None:
    """Run the worker's rounds until a round finds nothing due (retries included)."""
    import asyncio

    idle = 0
    for _ in range(rounds):
        if await w.deliver_due():
            idle = 0
            continue
        idle += 1
        if idle > 3:
            return
        await asyncio.sleep(0.15)

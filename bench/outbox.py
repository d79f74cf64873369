"""The outbox's cost and speed: what writing notifications adds to book_appointment and
leave_voicemail, and how long a committed booking takes to reach a clinic's webhook receiver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson

from bench.client import Connection, Run, run
from bench.data import MEASURED_AGENT_ID
from bench.workloads import Workload

# A clinic with the usual two channels: its automation's webhook and the front desk's email.
ADD_CHANNELS = """
insert into notification_endpoints (agent_configuration_id, kind, target, secret)
select c.id, e.kind, e.target, e.secret
from agent_configurations c,
     (values ('webhook', $2, $3), ('email', 'frontdesk@bench.example', null))
       as e (kind, target, secret)
where c.agent_id = $1
"""
REMOVE_CHANNELS = """
delete from notification_endpoints
where agent_configuration_id = (select id from agent_configurations where agent_id = $1)
"""
ROOT = Path(__file__).resolve().parent.parent
# Rows queued while no worker ran are not what the delay is measured on.
FORGET_QUEUED = "update notifications set status = 'skipped' where status = 'pending'"


# "Before": the rx functions as they were before the outbox, by making the helpers they now call
# do nothing (a call of an empty PL/pgSQL function is ~2 us). Put back from the definition file.
BEFORE_OUTBOX = """
create or replace function enqueue_voicemail_notice(
  cfg agent_configurations, p_voicemail uuid, p_call_id text
) returns void language plpgsql as $$ begin end $$;
create or replace function enqueue_appointment_notice(
  cfg agent_configurations, p_event text, p_appointment jsonb, p_previous jsonb
) returns void language plpgsql as $$ begin end $$;
create or replace function copy_call_recording(p_call_log uuid) returns void
language plpgsql as $$ begin end $$;
"""
DEFINITIONS = ROOT / "schema" / "definitions" / "09_notifications.sql"
VARIANTS = ("before", "no channels", "two channels")


@dataclass
class Cost:
    """One function's latencies before the outbox, with it and no channel, and with two."""

    name: str
    runs: dict[str, Run]

    def p(self, variant: str, q: float) -> float:
        return self.runs[variant].percentile_ms(q)

    def ratio(self, variant: str, q: float = 50) -> float:
        return self.p(variant, q) / self.p("before", q)


@dataclass
class Delivery:
    """Seconds from the booking's answer (its commit) to the webhook arriving at the receiver."""

    delays: list[float] = field(default_factory=list)
    sent: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.delays)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class OutboxFigures:
    costs: list[Cost] = field(default_factory=list)
    delivery: Delivery | None = None


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def _become(conn: asyncpg.Connection, variant: str) -> None:
    if variant == "before":
        await conn.execute(BEFORE_OUTBOX)
        return
    await conn.execute(DEFINITIONS.read_text(encoding="utf-8"))
    if variant == "two channels":
        await conn.execute(
            ADD_CHANNELS, MEASURED_AGENT_ID, "https://hooks.bench.example/x", _secret()
        )


async def cost(
    conn: asyncpg.Connection,
    port: int,
    workloads: list[Workload],
    requests: int,
    warmup: int,
    say: Callable[[str], None],
) -> list[Cost]:
    """p50 and p99 of each workload before the outbox, with it and no notification channel, and
    with two channels (a webhook and an email: two rows and a NOTIFY per call).

    The variants take turns in four blocks each, so that a drift of the machine (another
    process, autovacuum) does not land on one of them only.
    """
    found: list[Cost] = []
    block = max(requests // 4, 1)
    for workload in workloads:
        latencies: dict[str, list[int]] = {variant: [] for variant in VARIANTS}
        await run("127.0.0.1", port, workload.make, warmup, 1, workload.check)
        for _ in range(4):
            for variant in VARIANTS:
                await _become(conn, variant)
                await run("127.0.0.1", port, workload.make, warmup // 4 or 1, 1, workload.check)
                timed = await run("127.0.0.1", port, workload.make, block, 1, workload.check)
                if timed.failures:
                    raise RuntimeError(f"{workload.name}: {timed.failures} unexpected answers")
                latencies[variant].extend(timed.latencies_ns)
                await conn.execute(REMOVE_CHANNELS, MEASURED_AGENT_ID)
        await _become(conn, "no channels")
        item = Cost(workload.name, {v: Run(ns, 0.0) for v, ns in latencies.items()})
        found.append(item)
        say(
            f"outbox cost, {workload.name}: p50 {item.p('before', 50):.2f} ms before, "
            f"{item.p('no channels', 50):.2f} ({item.ratio('no channels'):.2f}x) with no channel, "
            f"{item.p('two channels', 50):.2f} ({item.ratio('two channels'):.2f}x) with two"
        )
    await conn.execute(FORGET_QUEUED)
    return found


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 204 at once and notes when each id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                at = time.perf_counter()
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                data = orjson.loads(body)["data"]
                self.arrived.setdefault(str(data.get("appointment_id")), at)
                self.changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@asynccontextmanager
async def worker_process(database_url: str, log_path: Path) -> AsyncIterator[None]:
    """One `python -m service worker`, stopped with SIGTERM at the end."""
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        NOTIFICATIONS_ALLOW_LOOPBACK_HTTP="true",
        LOG_FORMAT="json",
    )
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "worker",
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Connected and listening: its start-up is not part of any delay.
        await asyncio.sleep(2.0)
        if process.returncode is not None:
            raise RuntimeError(f"the worker exited; see {log_path}")
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def delivery(
    conn: asyncpg.Connection,
    database_url: str,
    port: int,
    booking: Workload,
    count: int,
    log_path: Path,
    say: Callable[[str], None],
    interval: float = 0.05,
) -> Delivery:
    """`count` bookings, one every `interval` seconds, each timed from its answer to the
    arrival of its appointment.booked webhook, with one worker running."""
    found = Delivery()
    async with Receiver() as receiver:
        await conn.execute(
            ADD_CHANNELS, MEASURED_AGENT_ID, f"http://127.0.0.1:{receiver.port}/hook", _secret()
        )
        # Only the webhook: the email channel has no server here.
        await conn.execute(
            "delete from notification_endpoints where kind = 'email' and agent_configuration_id"
            " = (select id from agent_configurations where agent_id = $1)",
            MEASURED_AGENT_ID,
        )
        answered: dict[str, float] = {}
        try:
            async with worker_process(database_url, log_path):
                service = await Connection.open("127.0.0.1", port)
                try:
                    for i in range(count):
                        status, body = await service.send(booking.make(i))
                        at = time.perf_counter()
                        if booking.check(status, body):
                            answered[str(orjson.loads(body)["appointment_id"])] = at
                        await asyncio.sleep(interval)
                finally:
                    await service.close()
                await _until(lambda: set(answered) <= set(receiver.arrived), receiver, 30)
        finally:
            await conn.execute(REMOVE_CHANNELS, MEASURED_AGENT_ID)
        found.sent = len(answered)
        found.delays = [
            receiver.arrived[key] - at for key, at in answered.items() if key in receiver.arrived
        ]
    say(
        f"commit to webhook: {len(found.delays)}/{found.sent} received, p50 "
        f"{found.percentile(50) * 1000:.1f} ms, p99 {found.percentile(99) * 1000:.1f} ms, "
        f"max {max(found.delays, default=float('nan')) * 1000:.1f} ms"
    )
    return found


async def _until(done: Callable[[], bool], receiver: Receiver, seconds: float) -> None:
    """Wait until `done()` holds (checked at each arrival), at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        receiver.changed.clear()
        remaining = deadline - time.monotonic()
        if done() or remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.changed.wait(), remaining)


def render(figures: OutboxFigures) -> list[str]:
    """Lines for the report: the cost table and the delivery delay, each with its target."""
    lines: list[str] = []
    if figures.costs:
        lines += [
            "Outbox: each function before the outbox (its helpers emptied), with it and no "
            "notification channel (an index probe finds none), and with two channels (a webhook "
            "and an email: two rows and a NOTIFY in the same transaction), the three in turns; "
            "target: p50 within 10% of before.",
            "",
            "| request | p50 ms before | no channel | x before | two channels | x before "
            "| p99 ms before | no channel | two channels |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for item in figures.costs:
            lines.append(
                f"| {item.name} | {item.p('before', 50):.2f} | {item.p('no channels', 50):.2f} "
                f"| {item.ratio('no channels'):.2f}x | {item.p('two channels', 50):.2f} "
                f"| {item.ratio('two channels'):.2f}x | {item.p('before', 99):.2f} "
                f"| {item.p('no channels', 99):.2f} | {item.p('two channels', 99):.2f} |"
            )
        lines.append("")
    found = figures.delivery
    if found is not None:
        lines += [
            f"Commit to webhook received (one worker, LISTEN/NOTIFY; {found.sent} bookings, one "
            f"every 50 ms, each timed from its answer to its appointment.booked arriving at a "
            f"local receiver): {len(found.delays)} of {found.sent} received, p50 "
            f"{found.percentile(50) * 1000:.1f} ms, p99 {found.percentile(99) * 1000:.1f} ms, "
            f"max {max(found.delays, default=float('nan')) * 1000:.1f} ms (targets: p50 under "
            "1 s, p99 under 3 s).",
            "",
        ]
    return lines

"""One benchmark run: a database of its own, the service as a subprocess, every measurement."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import psutil

from bench import data, outbox
from bench.client import Run, run
from bench.wire import RoundTripCounter
from bench.workloads import Workload, Workloads
from service.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
API_KEY = "bench-retell-key-not-a-secret"


@dataclass(frozen=True)
class Options:
    """How much to measure; --quick shrinks everything to a CI-sized run."""

    port: int = 18200
    requests: int = 500
    concurrent_requests: int = 2000
    concurrency: int = 16
    warmup: int = 50
    round_trip_calls: int = 50
    memory_requests: int = 100_000
    scale: data.Scale = field(default_factory=data.Scale)
    small_table: int = 10_000
    big_table: int = 1_000_000
    # Bookings timed from their answer to their webhook's arrival (one every 50 ms).
    delivery_bookings: int = 500
    keep_database: bool = False


@dataclass
class Row:
    """The figures of one workload."""

    name: str
    latency: Run | None = None
    throughput: Run | None = None
    round_trips: float | None = None
    note: str = ""


@dataclass
class Results:
    started: datetime
    options: Options
    load_seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    # (appointments in the table, window label, check_availability p50 in ms)
    growth: list[tuple[int, str, float]] = field(default_factory=list)
    outbox: outbox.OutboxFigures = field(default_factory=outbox.OutboxFigures)
    rss_before: int = 0
    rss_after: int = 0
    postgres_version: str = ""
    cores: int = 0
    seconds: float = 0.0


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def with_database(url: str, name: str) -> str:
    return str(httpx.URL(url).copy_with(path=f"/{name}"))


@asynccontextmanager
async def database_server() -> AsyncIterator[str]:
    """DATABASE_URL's server (default: the local PostgreSQL), else an embedded one."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        pass
    else:
        await conn.close()
        yield url
        return
    from service.db import start_embedded

    say("no PostgreSQL answers at DATABASE_URL; starting the embedded one in .data/")
    server = start_embedded(ROOT / ".data")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@asynccontextmanager
async def service(database_url: str, port: int, log_name: str) -> AsyncIterator[psutil.Process]:
    """`python -m service serve` as a subprocess, ready when /readyz answers.

    Waiting never blocks the event loop: the round-trip proxy runs on it.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        RETELL_API_KEY=API_KEY,
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_FORMAT="json",
    )
    with (RESULTS / log_name).open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "serve",
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            async with httpx.AsyncClient(timeout=1) as client:
                while True:
                    if process.returncode is not None:
                        raise RuntimeError(f"the service exited; see {RESULTS / log_name}")
                    try:
                        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
                        if answer.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the service was not ready within 30 s")
                    await asyncio.sleep(0.2)
            yield psutil.Process(process.pid)
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(15):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def measure(port: int, workload: Workload, options: Options) -> Row:
    """Warm up, then latency at concurrency 1 and throughput at the set concurrency."""
    row = Row(workload.name)
    warm = await run("127.0.0.1", port, workload.make, options.warmup, 1, workload.check)
    if warm.statuses.get(404) == warm.count:
        row.note = "n/a: the endpoint answers 404"
        return row
    row.latency = await run("127.0.0.1", port, workload.make, options.requests, 1, workload.check)
    row.throughput = await run(
        "127.0.0.1",
        port,
        workload.make,
        options.concurrent_requests,
        options.concurrency,
        workload.check,
    )
    failed = row.latency.failures + row.throughput.failures + warm.failures
    if failed:
        row.note = f"{failed} unexpected answers {dict(row.throughput.statuses)}"
    say(
        f"{workload.name}: p50 {row.latency.percentile_ms(50):.2f} ms, "
        f"p99 {row.latency.percentile_ms(99):.2f} ms, "
        f"{row.throughput.per_second:.0f}/s at c={options.concurrency}"
        + (f" ({row.note})" if row.note else "")
    )
    return row


async def count_round_trips(
    database_url: str, port: int, workloads: list[Workload], options: Options
) -> dict[str, float]:
    """Round trips per call, counted at the wire by a proxy in front of PostgreSQL.

    A second service process connects through the proxy (so the proxy never slows the timed
    runs). Each workload first runs until every pooled connection has prepared its statement,
    then the proxy's count over a fixed number of calls is divided by the number of calls.
    """
    upstream = httpx.URL(database_url)
    proxy = RoundTripCounter(upstream.host or "127.0.0.1", upstream.port or 5432)
    proxy_port = port + 2
    await proxy.start(proxy_port)
    proxied = str(
        upstream.copy_with(host="127.0.0.1", port=proxy_port).copy_merge_params(
            {"sslmode": "disable"}
        )
    )
    counts: dict[str, float] = {}
    try:
        async with service(proxied, port + 1, "service-round-trips.log"):
            for workload in workloads:
                # Enough calls that each pooled connection has prepared the statement.
                warm = await run(
                    "127.0.0.1", port + 1, workload.make, options.warmup, 1, workload.check
                )
                if warm.statuses.get(404) == warm.count:
                    continue
                before = proxy.round_trips
                await run(
                    "127.0.0.1",
                    port + 1,
                    workload.make,
                    options.round_trip_calls,
                    1,
                    workload.check,
                )
                counts[workload.name] = (proxy.round_trips - before) / options.round_trip_calls
                say(f"{workload.name}: {counts[workload.name]:.2f} round trips per call")
    finally:
        await proxy.stop()
    return counts


async def growth(
    conn: asyncpg.Connection, port: int, work: Workloads, options: Options, rows: int
) -> list[tuple[int, str, float]]:
    """check_availability p50 at the table's current size: 1, 7 and 31-day windows computed
    (the stored days cleared, then the same dates and durations at every size), and a 7-day
    window of remembered days."""
    await conn.execute("delete from slot_cache.days")
    # Vacuumed now rather than by autovacuum in the middle of the measurement (its analyze
    # makes every session plan its statements again).
    await conn.execute("vacuum (analyze) slot_cache.days")
    work.ask_afresh()
    found: list[tuple[int, str, float]] = []
    cases = [(f"{d}d", work.check_availability(d, remembered=False)) for d in (1, 7, 31)]
    cases.append(("7d remembered", work.check_availability(7)))
    for label, workload in cases:
        await run("127.0.0.1", port, workload.make, options.warmup, 1, workload.check)
        timed = await run("127.0.0.1", port, workload.make, options.requests, 1, workload.check)
        found.append((rows, label, timed.percentile_ms(50)))
        say(f"check_availability {label} with {rows:,} rows: p50 {timed.percentile_ms(50):.2f} ms")
    return found


async def memory(
    port: int, process: psutil.Process, work: Workloads, options: Options
) -> tuple[int, int]:
    """The service's resident size before and after `memory_requests` mixed requests."""
    # Half of them cheap, so that 100,000 requests fit in a few minutes; the other half walk
    # through the functions' whole path (parsing, validation, the database, speech, logging).
    mix = [
        work.readyz(),
        work.check_availability(7),
        work.readyz(),
        work.leave_voicemail(),
        work.readyz(),
        work.forward_call(),
    ]

    def make(i: int) -> bytes:
        return mix[i % len(mix)].make(i // len(mix))

    def check(status: int, body: bytes) -> bool:
        return status in (200, 204)

    await run("127.0.0.1", port, make, 2000, options.concurrency, check)
    before = process.memory_info().rss
    done = await run("127.0.0.1", port, make, options.memory_requests, options.concurrency, check)
    after = process.memory_info().rss
    say(
        f"memory: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB over {done.count} requests "
        f"({done.per_second:.0f}/s, {done.failures} unexpected answers)"
    )
    return before, after


# A database's name can't be a $1 parameter: PostgreSQL quotes it into the statement (%I).
CREATE_DATABASE = "select format('create database %I', $1::text)"
DROP_DATABASE = "select format('drop database if exists %I with (force)', $1::text)"


async def main(options: Options) -> Results:
    results = Results(started=datetime.now(UTC), options=options, cores=os.cpu_count() or 0)
    began = time.perf_counter()
    today = datetime.now(UTC).date()
    name = f"bench_{os.getpid()}"
    async with database_server() as server_url:
        admin = await asyncpg.connect(server_url)
        await admin.execute(await admin.fetchval(DROP_DATABASE, name))
        await admin.execute(await admin.fetchval(CREATE_DATABASE, name))
        await admin.close()
        url = with_database(server_url, name)
        try:
            await migrate(url)
            await _measure(url, today, options, results)
        finally:
            if not options.keep_database:
                admin = await asyncpg.connect(server_url)
                await admin.execute(await admin.fetchval(DROP_DATABASE, name))
                await admin.close()
    results.seconds = time.perf_counter() - began
    return results


async def _measure(url: str, today: date, options: Options, results: Results) -> None:
    conn = await asyncpg.connect(url)
    try:
        results.postgres_version = await conn.fetchval("show server_version")
        scale = options.scale
        started = time.perf_counter()
        clinic = await data.load_clinics(conn, scale, today)
        small_others = options.small_table - scale.clinic_appointments
        await data.add_other_appointments(conn, scale, 0, small_others, today)
        small_seconds = time.perf_counter() - started
        total = await conn.fetchval("select count(*) from appointments")
        say(f"loaded 51 clinics and {total} appointments in {small_seconds:.1f} s")

        port = options.port
        work = Workloads(clinic.agent_id, API_KEY, today, f"{os.getpid()}")
        async with service(url, port, "service.log") as process:
            results.growth += await growth(conn, port, work, options, total)

            started = time.perf_counter()
            await data.add_other_appointments(
                conn, scale, small_others, scale.other_appointments, today
            )
            results.load_seconds = small_seconds + time.perf_counter() - started
            total = await conn.fetchval("select count(*) from appointments")
            say(f"data set: {total} appointments, loaded in {results.load_seconds:.1f} s in all")

            slots = await data.free_grid_slots(
                conn, today + timedelta(days=60), today + timedelta(days=360)
            )
            random.Random(5).shuffle(slots)
            workloads = [
                work.readyz(),
                work.check_availability(1),
                work.check_availability(7),
                work.check_availability(7, remembered=False),
                work.book_appointment(slots),
                work.leave_voicemail(),
                work.forward_call(),
                work.call_ended(),
            ]
            # The whole service warms up before the floor is measured, so that the floor (the
            # first row) does not pay for the process's first requests alone.
            for workload in workloads:
                await run("127.0.0.1", port, workload.make, options.warmup, 1, workload.check)
            for workload in workloads:
                results.rows.append(await measure(port, workload, options))

            trips = await count_round_trips(url, port, workloads, options)
            for row in results.rows:
                row.round_trips = trips.get(row.name)

            results.rss_before, results.rss_after = await memory(port, process, work, options)

            # After every row above: those ran with no notification channel configured.
            results.outbox.costs = await outbox.cost(
                conn,
                port,
                [work.book_appointment(slots), work.leave_voicemail()],
                options.requests,
                options.warmup,
                say,
            )
            results.outbox.delivery = await outbox.delivery(
                conn,
                url,
                port,
                work.book_appointment(slots),
                options.delivery_bookings,
                RESULTS / "worker.log",
                say,
            )

            started = time.perf_counter()
            await data.add_other_appointments(
                conn,
                scale,
                scale.other_appointments,
                options.big_table - scale.clinic_appointments,
                today,
            )
            total = await conn.fetchval("select count(*) from appointments")
            say(f"grew to {total} appointments in {time.perf_counter() - started:.1f} s")
            results.growth += await growth(conn, port, work, options, total)
    finally:
        await conn.close()

"""A lean HTTP/1.1 load generator: keep-alive connections, requests prepared as bytes.

The service is measured, not the client: no HTTP library, just asyncio streams (on uvloop) that
write a request's bytes and read the status line, headers and a Content-Length body.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from service.retell import sign

# Builds the i-th request of a run (so that each booking can name its own slot).
RequestFactory = Callable[[int], bytes]
# Whether a response is the success the workload expects (status, body).
Check = Callable[[int, bytes], bool]


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def signed_post(path: str, body: object, key: str) -> bytes:
    """A POST as Retell sends it: compact JSON, signed over the exact bytes."""
    raw = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"X-Retell-Signature: {sign(raw, key)}\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


class Connection:
    """One keep-alive connection to the service."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not expected from this service")
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@dataclass
class Run:
    """What one run measured: each request's latency, the wall time, and what came back."""

    latencies_ns: list[int]
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0
    client_cpu_seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies_ns)

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index] / 1e6

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def run(
    host: str,
    port: int,
    make: RequestFactory,
    count: int,
    concurrency: int,
    check: Check,
) -> Run:
    """Send `count` requests over `concurrency` keep-alive connections, as fast as they answer."""
    connections = [await Connection.open(host, port) for _ in range(concurrency)]
    latencies: list[int] = []
    statuses: Counter[int] = Counter()
    failures = 0
    next_index = 0

    async def worker(conn: Connection) -> None:
        nonlocal next_index, failures
        while next_index < count:
            index = next_index
            next_index += 1
            request = make(index)
            started = time.perf_counter_ns()
            status, body = await conn.send(request)
            latencies.append(time.perf_counter_ns() - started)
            statuses[status] += 1
            if not check(status, body):
                failures += 1

    cpu_before = time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        elapsed = time.perf_counter() - started
        for conn in connections:
            await conn.close()
    return Run(latencies, elapsed, statuses, failures, time.process_time() - cpu_before)

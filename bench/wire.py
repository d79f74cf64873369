"""A TCP proxy between the service and PostgreSQL that counts round trips on the wire.

In PostgreSQL's protocol a client waits for the server only after a Sync (extended protocol:
Parse/Bind/Execute ... Sync) or a simple Query; each of those ends one round trip, answered by
one ReadyForQuery. Counting the client's Sync and Query messages therefore counts round trips,
whatever the driver pipelines before them. Nothing is assumed about asyncpg's behaviour.
"""

from __future__ import annotations

import asyncio
import struct

# The untyped first messages a client may send: SSLRequest and GSSENCRequest (answered by one
# byte, after which the client sends another untyped message), then StartupMessage.
_NEGOTIATION_CODES = {80877103, 80877104}


class RoundTripCounter:
    """Listens on `port`, forwards to the PostgreSQL at host:upstream_port, and counts."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.round_trips = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        downstream = asyncio.create_task(_pipe(server_r, client_w))
        try:
            await self._client_to_server(client_r, server_w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            server_w.close()
            await downstream
            client_w.close()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:  # untyped start-up messages
            head = await reader.readexactly(4)
            (length,) = struct.unpack("!I", head)
            body = await reader.readexactly(length - 4)
            writer.write(head + body)
            await writer.drain()
            if struct.unpack("!I", body[:4])[0] not in _NEGOTIATION_CODES:
                break
        while True:  # typed messages: one byte of type, then a length that includes itself
            head = await reader.readexactly(5)
            kind = head[:1]
            (length,) = struct.unpack("!I", head[1:])
            body = await reader.readexactly(length - 4)
            if kind in (b"S", b"Q"):
                self.round_trips += 1
            writer.write(head + body)
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

"""An in-process TCP proxy between the service and PostgreSQL that a test can cut or black-hole."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `cut()`, `black_hole()` and `restore()` fault it.

    - cut: every open connection is closed and the port stops listening (a database that went
      away: new connections are refused).
    - black_hole: open connections stop carrying bytes and new ones are accepted but never
      forwarded (a network that silently drops packets: nothing fails, nothing answers).
    """

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._mode = "forward"
        # Set while bytes flow; cleared while black-holed.
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value
        if value == "black_hole":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def start(self) -> None:
        self.mode = "forward"
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        self.mode = "cut"
        await self._stop_listening()
        self._close_all()

    async def black_hole(self) -> None:
        self.mode = "black_hole"
        if self._server is None:
            await self.start()
            self.mode = "black_hole"

    async def restore(self) -> None:
        """Forward again; connections held in the black hole are closed, as a reset would."""
        self._close_all()
        if self._server is None:
            await self.start()
        self.mode = "forward"

    async def close(self) -> None:
        await self._stop_listening()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode != "forward":
            return  # black hole: keep the socket open and never read from it
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                # Held while black-holed, never delivered: the peer sees silence, not an error.
                await self._flowing.wait()
                if sink.transport.is_closing():
                    break
                sink.write(data)
                await sink.drain()
        sink.close()

"""`python -m service serve` as a real process, for tests of signals, logs and scaling out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import respx

from service.__main__ import local_base_url
from tests.conftest import API_KEY

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def local_http(no_outbound_http: respx.MockRouter) -> respx.MockRouter:
    """Lets requests to the service processes on loopback through the outbound-HTTP guard."""
    no_outbound_http.route(host="127.0.0.1").pass_through()
    no_outbound_http.route(host="::1").pass_through()
    return no_outbound_http


class ServiceProcess:
    """One `serve` process on 127.0.0.1:`port`, its output kept in `log_path`."""

    def __init__(
        self,
        port: int,
        log_path: Path,
        *,
        args: Sequence[str] = (),
        unset: Sequence[str] = (),
        **env: str,
    ) -> None:
        self.port = port
        self.log_path = log_path
        self.args = list(args)
        dropped = {"DATABASE_URL", *unset}
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in dropped},
            "RETELL_API_KEY": API_KEY,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return local_base_url(self.env["HOST"], self.port)

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, within: float = 30.0) -> None:
        """Poll /readyz until 200; fail with the process's output if it never gets there."""
        assert self.process is not None
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            try:
                async with asyncio.timeout(within):
                    while True:
                        if self.process.poll() is not None:
                            raise AssertionError(f"serve exited early:\n{self.output()}")
                        try:
                            if (await client.get("/readyz")).status_code == 200:
                                return
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise AssertionError(f"serve never became ready:\n{self.output()}") from None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, within: float) -> int:
        """The exit code, waiting at most `within` seconds (then the process is killed)."""
        assert self.process is not None
        try:
            await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"serve did not exit within {within} s:\n{self.output()}"
            ) from None
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

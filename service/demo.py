"""The demo clinic `serve --demo` loads: a dental office in Boston with three staff."""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg

from service.config import DEFAULT_CONNECT_TIMEOUT_SECONDS
from service.db import connection_arguments

DEMO_AGENT_ID = "agent_7c41e9b2d05a4f83b6e2c19d0a"
DEMO_CONFIGURATION_ID = "d0000000-0000-4000-8000-0000000000c1"

DEMO_SQL_FILE = Path(__file__).with_name("demo.sql")


async def load_demo(url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS) -> None:
    """Load the demo clinic; running it again changes nothing."""
    conn = await asyncpg.connect(**connection_arguments(url, timeout=connect_timeout))
    try:
        async with conn.transaction():
            await conn.execute(DEMO_SQL_FILE.read_text(encoding="utf-8"))
    finally:
        await conn.close()


def demo_api_key(data_dir: Path) -> str:
    """The local signing key of the demo, made once and kept in the data folder."""
    path = data_dir / "demo_retell_api_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = "demo_" + secrets.token_hex(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key

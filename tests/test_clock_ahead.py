"""`./dev test-ahead` really moves the clock: the tests and their database run a year from now."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import date, timedelta

import asyncpg
import pytest

AHEAD_DAYS = os.environ.get("EXPECT_CLOCK_AHEAD_DAYS")

pytestmark = pytest.mark.skipif(not AHEAD_DAYS, reason="only under ./dev test-ahead")


def _real_now() -> float:
    """The time as a process without libfaketime sees it."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKETIME")}
    result = subprocess.run(
        ["date", "+%s"], env=env, capture_output=True, text=True, check=True, timeout=10
    )
    return float(result.stdout)


def test_the_clock_is_moved_ahead() -> None:
    """The tests' clock is EXPECT_CLOCK_AHEAD_DAYS days ahead of the real one (within a minute)."""
    assert AHEAD_DAYS is not None
    ahead = time.time() - _real_now()
    assert abs(ahead - int(AHEAD_DAYS) * 86400) < 60
    assert date.today() > date.fromtimestamp(_real_now()) + timedelta(days=int(AHEAD_DAYS) - 1)


async def test_the_database_clock_is_moved_ahead_too(database_url: str) -> None:
    """The tests' PostgreSQL reads the same moved clock (its views compare with now())."""
    assert AHEAD_DAYS is not None
    conn = await asyncpg.connect(database_url)
    try:
        server_now = await conn.fetchval("select extract(epoch from now())::float8")
    finally:
        await conn.close()
    assert abs(server_now - _real_now() - int(AHEAD_DAYS) * 86400) < 60

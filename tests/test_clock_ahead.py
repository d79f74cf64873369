"""`./dev test-ahead` really moves the clock: what its tests pass under is a year from now."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import date, timedelta

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

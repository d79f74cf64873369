"""What the benchmark sends: each workload makes its i-th request as Retell would send it.

Bodies start from Retell's example bodies (tests/fixtures: the live call object with its
transcript so far, 13-33 KB), with the measured clinic's agent id and a call id of their own.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.client import Check, RequestFactory, get, signed_post

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return value


@dataclass(frozen=True)
class Workload:
    """One row of the table: how to make request i, and what a success looks like."""

    name: str
    make: RequestFactory
    check: Check


def _ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"ok":true' in body


def _status(expected: int) -> Check:
    return lambda status, body: status == expected


def _weekdays(first: date, count: int) -> list[date]:
    days: list[date] = []
    day = first
    while len(days) < count:
        if day.isoweekday() < 6:
            days.append(day)
        day += timedelta(days=1)
    return days


class Workloads:
    """Builds every workload against one clinic; call ids never repeat within a run."""

    def __init__(self, agent_id: str, key: str, today: date, run_id: str) -> None:
        self.agent_id = agent_id
        self.key = key
        self.run_id = run_id
        self.check_days = _weekdays(today + timedelta(days=1), 20)
        # Days and durations never asked before in this run: each such check computes its days
        # (slot_cache remembers a day per staff member, date and duration once computed).
        self._fresh_days = _weekdays(today + timedelta(days=1), 250)
        self._fresh = itertools.count()

    def ask_afresh(self) -> None:
        """Start the never-asked dates and durations over (once the stored days are cleared):
        two measurements of computed days then ask the very same questions."""
        self._fresh = itertools.count()

    def _function(
        self, name: str, template: str, args: Callable[[int], dict[str, Any]]
    ) -> RequestFactory:
        base = fixture(template)
        call = dict(base["call"], agent_id=self.agent_id)
        prefix = f"call_{self.run_id}_{name}_{random.getrandbits(32):08x}"
        path = f"/retell/functions/{name}"

        def make(i: int) -> bytes:
            body = {"name": name, "call": dict(call, call_id=f"{prefix}_{i}"), "args": args(i)}
            return signed_post(path, body, self.key)

        return make

    def readyz(self) -> Workload:
        request = get("/readyz")
        return Workload("GET /readyz (floor)", lambda i: request, _status(200))

    def check_availability(self, days: int, *, remembered: bool = True) -> Workload:
        """The same 20 weekdays over and over (as callers ask), or, with remembered False, a
        date and duration no request of this run has asked for: the days are computed."""
        dates = self.check_days

        def args(i: int) -> dict[str, Any]:
            if remembered:
                return {"date": dates[i % len(dates)].isoformat(), "days": days}
            # 40 durations around the staff's own (30 and 45 minutes) on each of 250 weekdays:
            # 10,000 checks before one repeats, each as costly as a typical one.
            n = next(self._fresh)
            return {
                "date": self._fresh_days[(n // 40) % len(self._fresh_days)].isoformat(),
                "days": days,
                "duration_minutes": 20 + n % 40,
            }

        name = f"check_availability, {days} day{'s' if days > 1 else ''}"
        if not remembered:
            name += ", computed"
        make = self._function("check_availability", "custom_function_check_availability.json", args)
        return Workload(name, make, _ok)

    def book_appointment(self, slots: list[tuple[str, date, str]]) -> Workload:
        """Each request books its own free slot, taken from `slots` (consumed as it goes)."""

        def args(i: int) -> dict[str, Any]:
            staff, day, at = slots.pop()
            return {
                "patient_name": f"Bench Patient {i}",
                "date": day.isoformat(),
                "time": at,
                "staff_name": staff,
                "appointment_type": "cleaning",
            }

        make = self._function("book_appointment", "custom_function_book_appointment.json", args)
        return Workload(
            "book_appointment",
            make,
            lambda status, body: status == 200 and b'"booked":true' in body,
        )

    def leave_voicemail(self) -> Workload:
        def args(i: int) -> dict[str, Any]:
            return {
                "message": f"Please call me back about my appointment next week ({i}).",
                "caller_name": "Maria Gonzalez",
                "message_type": "callback_request",
            }

        make = self._function("leave_voicemail", "custom_function_leave_voicemail.json", args)
        return Workload("leave_voicemail", make, _ok)

    def forward_call(self) -> Workload:
        make = self._function(
            "forward_call",
            "custom_function_forward_call.json",
            lambda i: {"reason": "billing question", "caller_name": "Maria Gonzalez"},
        )
        return Workload("forward_call", make, _ok)

    def call_ended(self) -> Workload:
        base = fixture("webhook_call_ended.json")
        prefix = f"call_{self.run_id}_ended_{random.getrandbits(32):08x}"

        def make(i: int) -> bytes:
            call = dict(base["call"], agent_id=self.agent_id, call_id=f"{prefix}_{i}")
            return signed_post("/retell/webhook", {"event": "call_ended", "call": call}, self.key)

        return Workload("webhook call_ended", make, _status(204))

"""Dates, times and lists as the agent should say them aloud."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time

from typing_extensions import TypedDict

# Looked up rather than formatted with strftime: `%A` and `%B` go through the C library's
# locale-dependent formatting (~3 us a date, up to three dates per check_availability answer),
# and the agent speaks English whatever the server's locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


class Visit(TypedDict):
    """What a phrase about a slot or an appointment needs (either has more keys)."""

    date: str
    time: str
    staff_name: str


class OpenInterval(TypedDict):
    """One stretch of a day's business hours, HH:MM to HH:MM (the close may be 24:00)."""

    open: str
    close: str


def spoken_time(value: time | str) -> str:
    """'09:00' -> '9:00 AM'; '12:30' -> '12:30 PM'."""
    t = time.fromisoformat(value) if isinstance(value, str) else value
    hour = t.hour % 12 or 12
    return f"{hour}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


def spoken_date(value: date | str) -> str:
    """'2026-12-02' -> 'Wednesday, December 2'."""
    d = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{_WEEKDAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}"


def spoken_list(items: Sequence[str], conjunction: str = "or") -> str:
    """['a', 'b', 'c'] -> 'a, b or c'."""
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def spoken_slot(slot: Visit, *, with_date: bool = True, with_staff: bool = True) -> str:
    """A slot as 'Wednesday, December 2 at 9:00 AM with Dr. Ada Lee'."""
    text = spoken_time(slot["time"])
    if with_date:
        text = f"{spoken_date(slot['date'])} at {text}"
    if with_staff:
        text = f"{text} with {slot['staff_name']}"
    return text


def spoken_slots(slots: Sequence[Visit], limit: int = 3) -> str:
    """A handful of slots in one phrase, factoring out a shared date and each staff member.

    '9:00 AM and 9:30 AM with Dr. Omar Haddad or 9:00 AM with Dr. Ada Lee on Wednesday,
    December 2'.
    """
    shown = list(slots[:limit])
    one_date = len({s["date"] for s in shown}) == 1
    by_staff: dict[str, list[str]] = {}
    for slot in shown:
        by_staff.setdefault(slot["staff_name"], []).append(
            spoken_slot(slot, with_date=not one_date, with_staff=False)
        )
    if len(by_staff) == 1:
        ((staff, times),) = by_staff.items()
        phrase = spoken_list(times)
        if one_date:
            phrase = f"{phrase} on {spoken_date(shown[0]['date'])}"
        return f"{phrase} with {staff}"
    phrase = spoken_list(
        [f"{spoken_list(times, 'and')} with {staff}" for staff, times in by_staff.items()]
    )
    if one_date:
        phrase = f"{phrase} on {spoken_date(shown[0]['date'])}"
    return phrase


def spoken_hours(intervals: Sequence[OpenInterval] | None) -> str:
    """[{"open": "08:00", "close": "12:00"}, ...] -> '8:00 AM to 12:00 PM and 1:00 PM to ...'.

    None (no business_hours at all) means always open; [] means closed today.
    """
    if intervals is None:
        return "open 24 hours"
    if not intervals:
        return "closed"
    return spoken_list([f"{_clock(i['open'])} to {_clock(i['close'])}" for i in intervals], "and")


def _clock(value: str) -> str:
    # business_hours may close at 24:00, which is not a time of day.
    return "midnight" if value.startswith("24:") else spoken_time(value)

"""Speech: dates read aloud with English day and month names."""

from __future__ import annotations

from datetime import date, timedelta

from service.speech import spoken_date


def test_spoken_date_names_every_weekday_and_month() -> None:
    """Each day of a year reads as its English weekday, month and day of the month."""
    weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    months = [
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
    ]
    first = date(2027, 1, 1)  # a Friday
    for offset in range(365):
        day = first + timedelta(days=offset)
        expected = f"{weekdays[(4 + offset) % 7]}, {months[day.month - 1]} {day.day}"
        assert spoken_date(day) == expected
        assert spoken_date(day.isoformat()) == expected

"""Argument types shared by the custom functions, with refusals the agent can say."""

from __future__ import annotations

import functools
import re
from datetime import date, time
from typing import Annotated, Any, ClassVar

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def _parse_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError("not_a_date")
    text = value.strip()
    if text.lower() in _WEEKDAYS or text.lower() in ("today", "tomorrow"):
        raise ValueError("weekday_not_date")
    if not _DATE.fullmatch(text):
        raise ValueError("not_a_date")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError("impossible_date") from None


def _parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError("not_a_time")
    match = _TIME.fullmatch(value.strip())
    if match is None:
        raise ValueError("not_a_time")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ValueError("impossible_time")
    return time(hour, minute)


def _strip_blank(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


LocalDate = Annotated[date, BeforeValidator(_parse_date)]
LocalTime = Annotated[time, BeforeValidator(_parse_time)]


# Optional text: blank means absent, and the length limit applies to what is left.
Text = Annotated[
    Annotated[str, StringConstraints(max_length=500)] | None, BeforeValidator(_strip_blank)
]
LongText = Annotated[
    Annotated[str, StringConstraints(max_length=4000)] | None, BeforeValidator(_strip_blank)
]
Name = Annotated[
    Annotated[str, StringConstraints(max_length=200)] | None, BeforeValidator(_strip_blank)
]
Phone = Annotated[
    Annotated[str, StringConstraints(max_length=40)] | None, BeforeValidator(_strip_blank)
]
_EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# pydantic leaves a pattern on an optional string out of the JSON Schema; the LLM should see it.
Email = Annotated[
    Annotated[str, StringConstraints(max_length=254, pattern=_EMAIL_PATTERN)] | None,
    BeforeValidator(_strip_blank),
    Field(json_schema_extra={"pattern": _EMAIL_PATTERN}),
]


# The length of a visit a caller may ask for, in minutes.
SHORTEST_VISIT, LONGEST_VISIT = 5, 480
_DURATION_OUT_OF_RANGE = (
    f"The duration must be between {SHORTEST_VISIT} and {LONGEST_VISIT} minutes."
)


def _positive_minutes(value: int | None) -> int | None:
    if value is not None and not SHORTEST_VISIT <= value <= LONGEST_VISIT:
        raise ValueError("duration_out_of_range")
    return value


# The range is checked by the validator (its own refusal sentence) and told to the LLM's schema.
Minutes = Annotated[
    int | None,
    AfterValidator(_positive_minutes),
    Field(json_schema_extra={"minimum": SHORTEST_VISIT, "maximum": LONGEST_VISIT}),
]


class Args(BaseModel):
    """Base of every function's arguments: unknown keys ignored, strings trimmed."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    # What to ask the caller for when a field is missing.
    ASK: ClassVar[dict[str, str]] = {}
    # What to say when a field has a value of the wrong type or out of its range.
    WRONG: ClassVar[dict[str, str]] = {
        "staff_member_id": (
            "That staff member id isn't one I know; could you give me the staff member's name?"
        ),
        "duration_minutes": _DURATION_OUT_OF_RANGE,
        "patient_email": "That email address doesn't look right; could you spell it again?",
        "caller_email": "That email address doesn't look right; could you spell it again?",
    }

    def for_database(self) -> dict[str, Any]:
        """The arguments as JSON for the database function: ISO dates, HH:MM times."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, date):
                out[key] = value.isoformat()
            elif isinstance(value, time):
                out[key] = value.strftime("%H:%M")
            else:
                out[key] = value
        return out


_GENERIC = {
    "missing": "I still need the {field}.",
    "weekday_not_date": (
        "I need the {field} as a calendar date like 2026-12-02, not a weekday name."
    ),
    "not_a_date": "I need the {field} as a calendar date like 2026-12-02.",
    "impossible_date": "That {field} doesn't exist on the calendar; could you check it?",
    "not_a_time": "I need the {field} as a 24-hour clock time like 09:30.",
    "impossible_time": "That {field} isn't a real clock time; times run from 00:00 to 23:59.",
    "duration_out_of_range": _DURATION_OUT_OF_RANGE,
    "patient_name_missing": "May I have the patient's full name?",
    "selector_missing": (
        "Which appointment do you mean? Tell me its date, and the time if there are several."
    ),
}


def refusal_for(error: ValidationError, model: type[Args]) -> str:
    """One or two sentences saying what to ask the caller, from the first failing fields."""
    sentences: list[str] = []
    for item in error.errors()[:2]:
        field = str(item["loc"][0]) if item["loc"] else "request"
        if field in model.ASK and item["type"] == "missing":
            sentences.append(model.ASK[field])
            continue
        spoken_field = field.replace("_", " ")
        code = str(item.get("ctx", {}).get("error", ""))
        template = (
            _GENERIC.get(code)
            or model.WRONG.get(field)
            or _GENERIC.get(item["type"])
            or model.ASK.get(field)
            or "The value given for {field} doesn't look right; could you check it?"
        )
        sentences.append(template.format(field=spoken_field))
    return " ".join(dict.fromkeys(sentences))


# Parsing a number with phonenumbers costs about 0.1 ms; a call's numbers repeat on every
# function it calls (bench/NOTES.md), and the answer depends on the arguments alone.
@functools.lru_cache(maxsize=4096)
def normalize_phone(raw: str, region: str) -> str | None:
    """E.164 for a number as a caller says it, or None when it can't be a real number."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed) or not phonenumbers.is_valid_number(parsed):
        return None
    formatted: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return formatted


@functools.lru_cache(maxsize=4096)
def region_of(number: str | None) -> str | None:
    """The two-letter region of an E.164 number, e.g. '+16175550100' -> 'US'."""
    if not number:
        return None
    try:
        region: str | None = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "ZZ" else None


__all__ = [
    "Args",
    "Email",
    "Field",
    "LocalDate",
    "LocalTime",
    "LongText",
    "Minutes",
    "Name",
    "Phone",
    "Text",
    "normalize_phone",
    "refusal_for",
    "region_of",
]

"""check_availability: the earliest free slots, under the rules of CONTRACT.md section 4."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from service.functions.args import Args, LocalDate, Minutes, Name, Text
from service.functions.base import Context, Function, Result, Slot
from service.speech import spoken_date, spoken_slots

PREFERENCE_WORDS = {"morning": "morning", "afternoon": "afternoon", "evening": "evening"}


class CheckAvailabilityArgs(Args):
    """Arguments of check_availability."""

    ASK: ClassVar[dict[str, str]] = {"date": "Which day would you like me to check?"}
    WRONG: ClassVar[dict[str, str]] = {
        **Args.WRONG,
        "days": "I can search 1 to 31 days at a time; how many days should I look at?",
        "max_slots": "I can list 1 to 100 slots at a time.",
        "time_preference": "The time preference must be morning, afternoon or evening (or any).",
    }

    date: LocalDate = Field(description="First day to search, YYYY-MM-DD in the clinic's zone.")
    days: int = Field(default=1, ge=1, le=31, description="How many days to search (1-31).")
    staff_name: Name = Field(default=None, description="A staff member as the caller says it.")
    staff_member_id: UUID | None = Field(default=None, description="A staff member's id.")
    staff_role: Text = Field(default=None, description="A role such as hygienist or dentist.")
    time_preference: Literal["morning", "afternoon", "evening", "any"] = Field(
        default="any",
        description="morning is before 12:00, afternoon 12:00-17:00, evening from 17:00.",
    )
    duration_minutes: Minutes = Field(
        default=None, description="Length of the visit; default is the staff member's own."
    )
    max_slots: int = Field(default=12, ge=1, le=100, description="At most this many slots.")


class Availability(Result):
    """rx_check_availability's answer: the earliest free slots, in the clinic's zone."""

    timezone: str
    slots: list[Slot]
    staff_names: list[str] = Field(default_factory=list)


CHECK_AVAILABILITY_SQL = "select rx_check_availability($1, $2::jsonb, $3::jsonb, $4, $5)"


def speak(result: Availability, args: CheckAvailabilityArgs, context: Context) -> dict[str, Any]:
    slots = result.slots
    names = result.staff_names
    who = f" with {names[0]}" if (args.staff_name or args.staff_member_id) and names else ""
    when = spoken_date(args.date)
    if args.days > 1:
        when = f"between {when} and {spoken_date(args.date + timedelta(days=args.days - 1))}"
    else:
        when = f"on {when}"
    part = PREFERENCE_WORDS.get(args.time_preference)
    part_text = f" in the {part}" if part else ""
    if slots:
        message = f"I have {spoken_slots(slots)}."
        if len(slots) > 3:
            message += " I have more times if none of those suit."
    else:
        message = f"I don't have any openings{part_text} {when}{who}. Would another day work?"
    return {
        "ok": True,
        "available": bool(slots),
        "timezone": result.timezone,
        "slots": slots,
        "message": message,
    }


FUNCTIONS = [
    Function(
        name="check_availability",
        description=(
            "Find free appointment slots. Call before offering times to the caller; offer only "
            "times this returns."
        ),
        args=CheckAvailabilityArgs,
        sql=CHECK_AVAILABILITY_SQL,
        result=Availability,
        speak=speak,
        refusal_fields=lambda: {"available": False, "slots": []},
    )
]

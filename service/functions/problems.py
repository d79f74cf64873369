"""The database's refusals, for every function at once, as sentences the agent can say."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.functions.args import normalize_phone
from service.functions.base import Appointment, Context, Refusal, Result
from service.speech import spoken_date, spoken_list, spoken_time

# Asked by leave_voicemail's arguments and by its database function alike.
ASK_CALLBACK_NUMBER = "What number should the team call you back on?"


class Problem(Result):
    """A database function's answer that is a refusal: its code, and what the sentence needs."""

    problem: str
    # The clinic's today (ISO), for dates in the past or too far ahead.
    today: str = ""
    # Staff names or roles to choose from, or the caller's appointments on the day named.
    choices: list[str] | list[Appointment] = Field(default_factory=list)


def phone_or_refuse(raw: str, context: Context, *, field: str | None = None) -> str:
    """A phone number as the caller gave it, in E.164, or a Refusal asking for it again."""
    normalized = normalize_phone(raw, context.region)
    if normalized is None:
        where = {"field": field} if field else {}
        raise Refusal(
            "That phone number doesn't look complete. Could you say it again with the area code?",
            reason="invalid_phone",
            **where,
        )
    return normalized


def refusal_from(result: dict[str, Any]) -> Refusal:
    """The Refusal for a result that holds a `problem`."""
    parsed = Problem.model_validate(result)
    problem, today = parsed.problem, parsed.today
    if problem == "past_date":
        return Refusal(
            f"That date has already passed; today is {spoken_date(today)}, {today[:4]}. "
            "Which upcoming date would you like?",
            reason="past_date",
            today=today,
        )
    if problem == "too_far":
        return Refusal(
            f"That date is more than a year away; today is {spoken_date(today)}, {today[:4]}. "
            "Could you check the year?",
            reason="too_far",
            today=today,
        )
    if problem == "ambiguous_appointment":
        appointments = [c for c in parsed.choices if not isinstance(c, str)]
        times = spoken_list([spoken_time(a["time"]) for a in appointments[:4]])
        return Refusal(
            f"You have more than one appointment that day, at {times}. Which one do you mean?",
            reason="ambiguous_appointment",
            choices=appointments,
        )
    choices = [str(c) for c in parsed.choices]
    if problem == "unknown_staff":
        if not choices:
            return Refusal(
                "Nobody here takes appointments at the moment.", reason="unknown_staff", choices=[]
            )
        return Refusal(
            f"I couldn't find that person. You can book with {spoken_list(choices[:5])}.",
            reason="unknown_staff",
            choices=choices,
        )
    if problem == "ambiguous_staff":
        return Refusal(
            f"More than one person matches that name: {spoken_list(choices[:5])}. "
            "Which one would you like?",
            reason="ambiguous_staff",
            choices=choices,
        )
    if problem == "unknown_role":
        what = spoken_list(choices[:5]) if choices else "no particular role"
        return Refusal(
            f"We don't have anyone with that role; our team includes {what}.",
            reason="unknown_role",
            choices=choices,
        )
    if problem == "appointment_not_found":
        return Refusal(
            "I couldn't find an upcoming appointment under that number and name. "
            "Could you give me the phone number and name it was booked under?",
            reason="appointment_not_found",
        )
    if problem == "appointment_cancelled":
        return Refusal(
            "That appointment was cancelled, so I can't move it. Shall I book a new one instead?",
            reason="appointment_cancelled",
        )
    if problem in ("appointment_in_past", "appointment_not_movable"):
        return Refusal(
            "That appointment has already taken place, so I can't change it.", reason=problem
        )
    if problem == "voicemail_disabled":
        return Refusal(
            "I'm sorry, this office isn't taking messages by phone. Please call back during "
            "office hours.",
            reason="voicemail_disabled",
        )
    if problem == "no_callback_number":
        return Refusal(ASK_CALLBACK_NUMBER, reason=problem)
    return Refusal("I can't do that right now.", reason=problem)

"""The database's refusals that several functions share, as sentences the agent can say."""

from __future__ import annotations

from typing import Any

from service.functions import Context, Refusal
from service.functions.args import normalize_phone
from service.speech import spoken_date, spoken_list


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


def refusal_from(result: dict[str, Any]) -> Refusal | None:
    """The Refusal for a result's `problem`, or None when the result has none."""
    problem = result.get("problem")
    if problem is None:
        return None
    today = str(result.get("today", ""))
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
    choices = [str(c) for c in result.get("choices", [])]
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
    return Refusal("I can't do that right now.", reason=str(problem))

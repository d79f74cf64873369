"""leave_voicemail: a message for the clinic's team, stored once per call and wording."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from service.functions import Context, Function, Refusal
from service.functions.args import Args, Email, Name, Phone, Text
from service.functions.problems import phone_or_refuse, refusal_from

MessageText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)
]


class LeaveVoicemailArgs(Args):
    """Arguments of leave_voicemail."""

    ASK: ClassVar[dict[str, str]] = {"message": "What message would you like me to pass on?"}
    WRONG: ClassVar[dict[str, str]] = {
        **Args.WRONG,
        "message": "What message would you like me to pass on?",
        "priority": "The priority must be low, normal, high or urgent.",
        "message_type": (
            "The message type must be voicemail, callback_request or information_request."
        ),
    }

    message: MessageText = Field(description="The caller's message, in their words.")
    caller_name: Name = None
    caller_phone: Phone = Field(default=None, description="Default: the caller's number.")
    caller_email: Email = None
    subject: Text = Field(default=None, description="A few words saying what it is about.")
    message_type: Literal["voicemail", "callback_request", "information_request"] = "voicemail"
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    urgent: bool = Field(default=False, description="True makes the priority urgent.")


def prepare(args: LeaveVoicemailArgs, context: Context) -> dict[str, Any]:
    out = args.for_database()
    raw = args.caller_phone or context.caller_number
    if raw is None:
        raise Refusal(
            "What number should the team call you back on?",
            reason="no_callback_number",
        )
    out["caller_phone"] = phone_or_refuse(raw, context)
    return out


def speak(result: dict[str, Any], args: LeaveVoicemailArgs, context: Context) -> dict[str, Any]:
    problem = result.get("problem")
    if problem == "voicemail_disabled":
        raise Refusal(
            "I'm sorry, this office isn't taking messages by phone. Please call back during "
            "office hours.",
            reason="voicemail_disabled",
        )
    if problem == "no_callback_number":
        raise Refusal("What number should the team call you back on?", reason=problem)
    refusal = refusal_from(result)
    if refusal is not None:
        raise refusal
    urgent = result.get("priority") == "urgent"
    message = "I've passed your message to the team"
    message += " and marked it urgent." if urgent else "."
    message += " Someone will get back to you." if args.message_type != "voicemail" else ""
    return {
        "ok": True,
        "saved": True,
        "voicemail_id": result["voicemail_id"],
        "message": message,
    }


FUNCTIONS = [
    Function(
        name="leave_voicemail",
        description=(
            "Take a message for the clinic's team (a callback request, a question, a voicemail)."
        ),
        args=LeaveVoicemailArgs,
        database_function="rx_leave_voicemail",
        speak=speak,
        prepare=prepare,
        refusal_fields=lambda: {"saved": False},
    )
]

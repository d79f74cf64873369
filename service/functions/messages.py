"""leave_voicemail: a message for the clinic's team, stored once per call and wording."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from service.functions.args import Args, Email, Name, Phone, Text
from service.functions.base import Context, Function, Refusal, Result
from service.functions.problems import ASK_CALLBACK_NUMBER, phone_or_refuse

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
        raise Refusal(ASK_CALLBACK_NUMBER, reason="no_callback_number")
    out["caller_phone"] = phone_or_refuse(raw, context)
    return out


class Saved(Result):
    """rx_leave_voicemail's answer: the stored message (the same one when a retry repeats it)."""

    voicemail_id: str
    priority: str


LEAVE_VOICEMAIL_SQL = "select rx_leave_voicemail($1, $2::jsonb, $3::jsonb, $4, $5)"


def speak(result: Saved, args: LeaveVoicemailArgs, context: Context) -> dict[str, Any]:
    urgent = result.priority == "urgent"
    message = "I've passed your message to the team"
    message += " and marked it urgent." if urgent else "."
    message += " Someone will get back to you." if args.message_type != "voicemail" else ""
    return {
        "ok": True,
        "saved": True,
        "voicemail_id": result.voicemail_id,
        "message": message,
    }


FUNCTIONS = [
    Function(
        name="leave_voicemail",
        description=(
            "Take a message for the clinic's team (a callback request, a question, a voicemail)."
        ),
        args=LeaveVoicemailArgs,
        sql=LEAVE_VOICEMAIL_SQL,
        result=Saved,
        speak=speak,
        prepare=prepare,
        refusal_fields=lambda: {"saved": False},
    )
]

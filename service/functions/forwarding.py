"""forward_call: whether to transfer the caller to the office, and to which number."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.functions.args import Args, Name, Text
from service.functions.base import Context, Function, Result


class ForwardCallArgs(Args):
    """Arguments of forward_call."""

    reason: Text = Field(default=None, description="Why the caller wants a person.")
    caller_name: Name = None


_WHY_NOT = {
    "forwarding_disabled": "I'm not able to transfer calls here",
    "no_forward_number": "I don't have a number to transfer you to",
    "outside_business_hours": "The office is closed right now, so I can't put you through",
}


class Forwarding(Result):
    """rx_forward_call's answer: the number to transfer to, or why not."""

    forward: bool
    forward_number: str | None = None
    # Set when forward is false: one of _WHY_NOT's keys.
    reason: str | None = None
    voicemail_enabled: bool


FORWARD_CALL_SQL = "select rx_forward_call($1, $2::jsonb, $3::jsonb, $4, $5)"


def speak(result: Forwarding, args: ForwardCallArgs, context: Context) -> dict[str, Any]:
    if result.forward:
        return {
            "ok": True,
            "forward": True,
            "forward_number": result.forward_number,
            "message": "I'll put you through to the office now; please hold.",
        }
    reason = result.reason
    message = _WHY_NOT[reason or ""]
    if result.voicemail_enabled:
        message += ", but I can take a message for the team."
    else:
        message += "."
    return {
        "ok": True,
        "forward": False,
        "reason": reason,
        "voicemail_enabled": result.voicemail_enabled,
        "message": message,
    }


FUNCTIONS = [
    Function(
        name="forward_call",
        description=(
            "Ask whether the caller can be transferred to the office now. When forward is true, "
            "transfer to forward_number; otherwise offer to take a message."
        ),
        args=ForwardCallArgs,
        sql=FORWARD_CALL_SQL,
        result=Forwarding,
        speak=speak,
        refusal_fields=lambda: {"forward": False},
    )
]

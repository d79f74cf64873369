"""Signed custom-function calls built like Retell's own envelopes, for the function tests."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import Clock, load_fixture, post_signed
from tests.factories import AGENT_ID

CALLER = "+16175550187"
CLINIC_LINE = "+16175550100"
# A Monday, 07:00 in Boston: early enough that the whole of Wednesday 2026-12-02 is bookable.
MONDAY_MORNING = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WEDNESDAY = "2026-12-02"

_FIXTURES = {
    "check_availability": "custom_function_check_availability.json",
    "book_appointment": "custom_function_book_appointment.json",
    "leave_voicemail": "custom_function_leave_voicemail.json",
    "forward_call": "custom_function_forward_call.json",
}


def envelope(
    name: str,
    args: dict[str, Any],
    *,
    agent_id: str = AGENT_ID,
    call_id: str = "call_5b0e8c2f71d94a6e93c4a1f7d28",
    **call_fields: Any,
) -> dict[str, Any]:
    """Retell's example body for `name` (or book_appointment's), with this call and these args."""
    body = copy.deepcopy(load_fixture(_FIXTURES.get(name, _FIXTURES["book_appointment"])))
    body["name"] = name
    body["call"]["agent_id"] = agent_id
    body["call"]["call_id"] = call_id
    body["call"]["from_number"] = CALLER
    body["call"]["to_number"] = CLINIC_LINE
    body["call"]["direction"] = "inbound"
    for key, value in call_fields.items():
        if value is None:
            body["call"].pop(key, None)
        else:
            body["call"][key] = value
    body["args"] = args
    return body


async def call(
    client: httpx.AsyncClient,
    clock: Clock,
    name: str,
    args: dict[str, Any],
    *,
    expect_status: int = 200,
    **envelope_fields: Any,
) -> dict[str, Any]:
    """POST a signed call of custom function `name` and return its JSON result."""
    response = await post_signed(
        client,
        f"/retell/functions/{name}",
        envelope(name, args, **envelope_fields),
        timestamp_ms=signed_at(clock),
    )
    assert response.status_code == expect_status, response.text
    result: dict[str, Any] = response.json()
    return result


def signed_at(clock: Clock) -> int:
    """A signature timestamp the app's clock accepts as fresh."""
    return int(clock().timestamp() * 1000)

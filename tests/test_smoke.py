"""The service answers its health checks and one function end to end."""

from __future__ import annotations

import httpx

from tests.calls import MONDAY_MORNING, WEDNESDAY, signed_at
from tests.conftest import Clock, post_signed
from tests.factories import Clinic


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    """GET /healthz is 200 while the process runs."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_check_availability_offers_morning_slots(
    client: httpx.AsyncClient, clinic: Clinic, clock: Clock
) -> None:
    """A signed check_availability for a weekday morning lists that morning's slots (the app's
    clock pinned to the Monday before, so the answer is the same on any day)."""
    clock.now = MONDAY_MORNING
    body = {
        "name": "check_availability",
        "call": {"call_id": "call_1", "agent_id": clinic.agent_id, "from_number": "+16175550187"},
        "args": {"date": WEDNESDAY, "time_preference": "morning", "staff_name": "Dr. Lee"},
    }
    response = await post_signed(
        client, "/retell/functions/check_availability", body, timestamp_ms=signed_at(clock)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True
    assert [s["time"] for s in result["slots"]] == [
        "09:00",
        "09:30",
        "10:00",
        "10:30",
        "11:00",
        "11:30",
    ]
    assert result["slots"][0]["start"] == "2026-12-02T09:00:00-05:00"
    assert result["message"].startswith(
        "I have 9:00 AM, 9:30 AM or 10:00 AM on Wednesday, December 2"
    )

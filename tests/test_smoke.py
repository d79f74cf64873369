"""The service answers its health checks and one function end to end."""

from __future__ import annotations

import httpx

from tests.conftest import post_signed
from tests.factories import Clinic


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    """GET /healthz is 200 while the process runs."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_check_availability_offers_morning_slots(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    """A signed check_availability for a weekday morning lists that morning's slots."""
    body = {
        "name": "check_availability",
        "call": {"call_id": "call_1", "agent_id": clinic.agent_id, "from_number": "+16175550187"},
        "args": {"date": "2027-01-06", "time_preference": "morning", "staff_name": "Dr. Lee"},
    }
    response = await post_signed(client, "/retell/functions/check_availability", body)
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
    assert result["slots"][0]["start"] == "2027-01-06T09:00:00-05:00"
    assert result["message"].startswith(
        "I have 9:00 AM, 9:30 AM or 10:00 AM on Wednesday, January 6"
    )

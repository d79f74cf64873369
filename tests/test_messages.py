"""leave_voicemail stores one message per call and wording; forward_call decides on transfer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from tests.calls import CALLER, call
from tests.conftest import Clock
from tests.factories import Clinic, create_clinic

WEDNESDAY_10AM = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
WEDNESDAY_6PM = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)
MESSAGE = "Question about the balance on my last statement. Please call me back tomorrow."


@pytest.fixture(autouse=True)
def office_hours(clock: Clock) -> None:
    clock.now = WEDNESDAY_10AM


async def voicemail_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        select v.id, v.agent_configuration_id, v.caller_name, v.caller_phone, v.caller_email,
               v.transcript, v.message_type, v.priority, v.subject, v.is_urgent, v.received_at,
               l.retell_call_id
        from voicemails v left join customer_call_logs l on l.id = v.call_log_id
        order by v.created_at
        """
    )
    return rows


async def leave(
    client: httpx.AsyncClient, clock: Clock, *, call_id: str = "call_vm_1", **args: Any
) -> dict[str, Any]:
    args.setdefault("message", MESSAGE)
    return await call(client, clock, "leave_voicemail", args, call_id=call_id)


async def test_voicemail_is_stored_and_linked_to_the_call(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A message is stored with its transcript, type, subject and the call's log row."""
    result = await leave(
        client,
        clock,
        caller_name="James Whitaker",
        caller_phone="617 555 0163",
        caller_email="james@example.com",
        subject="Billing question",
        message_type="callback_request",
    )
    rows = await voicemail_rows(db)
    assert len(rows) == 1
    row = rows[0]
    assert result == {
        "ok": True,
        "saved": True,
        "voicemail_id": str(row["id"]),
        "message": "I've passed your message to the team. Someone will get back to you.",
    }
    assert row["transcript"] == MESSAGE
    assert row["agent_configuration_id"] == clinic.configuration_id
    assert (row["caller_name"], row["caller_phone"]) == ("James Whitaker", "+16175550163")
    assert (row["message_type"], row["priority"], row["is_urgent"]) == (
        "callback_request",
        "normal",
        False,
    )
    assert (row["subject"], row["caller_email"]) == ("Billing question", "james@example.com")
    assert row["received_at"] == WEDNESDAY_10AM
    assert row["retell_call_id"] == "call_vm_1"


PRIORITY_CASES: list[tuple[dict[str, Any], str, bool]] = [
    ({"urgent": True}, "urgent", True),
    ({"priority": "urgent"}, "urgent", True),
    ({"priority": "high"}, "high", False),
    ({"priority": "low", "urgent": False}, "low", False),
    ({"priority": "low", "urgent": True}, "urgent", True),
    ({}, "normal", False),
]


async def test_priority_and_urgency(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """urgent=true or priority urgent marks the message urgent; other priorities are kept."""
    for n, (args, priority, urgent) in enumerate(PRIORITY_CASES):
        result = await leave(client, clock, call_id=f"call_priority_{n}", **args)
        assert result["ok"] is True
        assert result["message"].endswith("and marked it urgent.") is urgent
        row = await db.fetchrow(
            "select priority, is_urgent from voicemails where id = $1",
            uuid.UUID(result["voicemail_id"]),
        )
        assert row is not None
        assert (row["priority"], row["is_urgent"]) == (priority, urgent), args


async def test_caller_number_is_the_default_callback(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Without caller_phone the call's own number is stored."""
    await leave(client, clock)
    assert [r["caller_phone"] for r in await voicemail_rows(db)] == [CALLER]


async def test_a_retry_stores_one_message(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """The same message from the same call, retried (also concurrently), is stored once."""
    first = await leave(client, clock)
    results = await asyncio.gather(*(leave(client, clock) for _ in range(6)))
    assert {r["voicemail_id"] for r in results} == {first["voicemail_id"]}
    assert len(await voicemail_rows(db)) == 1
    other = await leave(client, clock, message="And one more thing: I moved house.")
    assert other["voicemail_id"] != first["voicemail_id"]
    assert len(await voicemail_rows(db)) == 2


async def test_voicemail_refused_when_disabled(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """A clinic with voicemail_enabled false takes no messages."""
    await create_clinic(db, voicemail_enabled=False)
    result = await leave(client, clock)
    assert result["ok"] is False
    assert result["saved"] is False
    assert result["reason"] == "voicemail_disabled"
    assert await voicemail_rows(db) == []


async def test_voicemail_needs_a_callback_number(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A web call with no caller_phone is asked for a callback number; nothing is stored."""
    result = await call(
        client,
        clock,
        "leave_voicemail",
        {"message": MESSAGE},
        from_number=None,
        to_number=None,
        call_type="web_call",
    )
    assert result["ok"] is False
    assert result["saved"] is False
    assert result["message"] == "What number should the team call you back on?"
    result = await leave(client, clock, caller_phone="12")
    assert result["ok"] is False
    assert "area code" in result["message"]
    for blank in ("", "   "):
        result = await leave(client, clock, message=blank)
        assert result["ok"] is False
        assert result["message"] == "What message would you like me to pass on?"
    assert await voicemail_rows(db) == []


async def forward_log(conn: asyncpg.Connection, call_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "select forward_requested_at, forward_reason, forward_number from customer_call_logs"
        " where retell_call_id = $1",
        call_id,
    )
    assert row is not None
    return row


async def test_forward_when_enabled_and_open(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """During business hours the call is forwarded to the clinic's number; the log says so."""
    result = await call(
        client, clock, "forward_call", {"reason": "dental_emergency"}, call_id="call_fw"
    )
    assert result == {
        "ok": True,
        "forward": True,
        "forward_number": "+16175550142",
        "message": "I'll put you through to the office now; please hold.",
    }
    log = await forward_log(db, "call_fw")
    assert (log["forward_requested_at"], log["forward_reason"], log["forward_number"]) == (
        WEDNESDAY_10AM,
        "dental_emergency",
        "+16175550142",
    )


FORWARD_REFUSAL_CASES: list[tuple[dict[str, Any], datetime, str]] = [
    ({"forward_enabled": False}, WEDNESDAY_10AM, "forwarding_disabled"),
    # A dashboard saves the toggle before the number is typed.
    ({"forward_number": None}, WEDNESDAY_10AM, "no_forward_number"),
    ({}, WEDNESDAY_6PM, "outside_business_hours"),
    ({}, datetime(2026, 12, 5, 15, tzinfo=UTC), "outside_business_hours"),  # a Saturday
    ({}, datetime(2026, 12, 2, 22, 0, tzinfo=UTC), "outside_business_hours"),  # 17:00 EST
]


async def test_forward_refused_with_a_reason(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """Disabled, numberless or closed: forward false with the reason; the request is logged."""
    for n, (given, now, reason) in enumerate(FORWARD_REFUSAL_CASES):
        agent_id = f"agent_forward_{n}"
        await create_clinic(db, agent_id=agent_id, with_staff=False, **given)
        clock.now = now
        call_id = f"call_fw_{n}"
        result = await call(
            client, clock, "forward_call", {"reason": "billing"}, call_id=call_id, agent_id=agent_id
        )
        assert result["ok"] is True
        assert result["forward"] is False
        assert result["reason"] == reason, given
        assert result["voicemail_enabled"] is True
        assert result["message"].endswith("but I can take a message for the team.")
        assert "forward_number" not in result
        log = await forward_log(db, call_id)
        assert (log["forward_requested_at"], log["forward_reason"], log["forward_number"]) == (
            now,
            "billing",
            None,
        )


async def test_forward_open_at_eight_and_always_without_hours(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """8:00 sharp is open; a clinic without business_hours forwards at any hour."""
    await create_clinic(db)
    clock.now = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)  # 08:00 EST
    result = await call(client, clock, "forward_call", {})
    assert result["forward"] is True
    await create_clinic(db, agent_id="agent_all_hours", business_hours=None, with_staff=False)
    clock.now = datetime(2026, 12, 6, 8, tzinfo=UTC)  # 03:00 on a Sunday
    result = await call(client, clock, "forward_call", {}, agent_id="agent_all_hours")
    assert result["forward"] is True


async def test_forward_refused_without_voicemail_says_so(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    """Closed and without voicemail, the agent doesn't offer to take a message."""
    await create_clinic(db, voicemail_enabled=False)
    clock.now = WEDNESDAY_6PM
    result = await call(client, clock, "forward_call", {})
    assert result["voicemail_enabled"] is False
    assert result["message"] == "The office is closed right now, so I can't put you through."


async def test_a_caller_without_a_number_is_asked_for_a_callback_number(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """Withheld caller id: asked for a callback number, and the number given is stored."""
    result = await call(
        client, clock, "leave_voicemail", {"message": MESSAGE}, from_number="anonymous"
    )
    assert result["ok"] is False
    assert result["saved"] is False
    assert result["reason"] == "no_callback_number"
    assert result["message"] == "What number should the team call you back on?"
    assert await voicemail_rows(db) == []
    result = await call(
        client,
        clock,
        "leave_voicemail",
        {"message": MESSAGE, "caller_phone": "617 555 0123"},
        from_number="anonymous",
        call_id="call_vm_anonymous",
    )
    assert result["saved"] is True
    rows = await voicemail_rows(db)
    assert [(r["caller_phone"], r["retell_call_id"]) for r in rows] == [
        ("+16175550123", "call_vm_anonymous")
    ]

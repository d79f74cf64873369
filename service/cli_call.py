"""`call`: signed requests to a running service as Retell would send them, and a scripted call."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import orjson

from service.cli_tools import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REJECTED,
    EXIT_SERVER_ERROR,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from service.retell import sign

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# Fictional (555-01xx) numbers, so a simulated call never points at a real person.
DEFAULT_FROM_NUMBER = "+16175550187"
DEFAULT_TO_NUMBER = "+16175550100"


class UsageError(Exception):
    """A command line that can't be run as given."""


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`key=value` gives a string (the model coerces "3" or "true" where it expects them);
    `key:=json` gives a JSON value (numbers, booleans, lists)."""
    args: dict[str, Any] = {}
    for item in items:
        equals = item.find("=")
        if equals > 0 and item[equals - 1] == ":":
            key, raw = item[: equals - 1], item[equals + 1 :]
            try:
                args[key] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise UsageError(f"{item!r}: the value after := is not JSON.") from None
        elif "=" in item:
            key, value = item.split("=", 1)
            args[key] = value
        else:
            raise UsageError(f"{item!r}: arguments are key=value (or key:=json).")
        if not key:
            raise UsageError(f"{item!r}: the argument has no name.")
    return args


@dataclass
class CallIdentity:
    """The call the requests belong to, as Retell would describe it."""

    agent_id: str
    call_id: str = field(default_factory=lambda: f"call_cli_{uuid.uuid4().hex[:24]}")
    from_number: str | None = DEFAULT_FROM_NUMBER
    to_number: str | None = DEFAULT_TO_NUMBER
    start_timestamp: int = field(default_factory=lambda: int(time.time() * 1000))

    def call_object(self, **extra: Any) -> dict[str, Any]:
        call: dict[str, Any] = {
            "call_id": self.call_id,
            "call_type": "phone_call",
            "agent_id": self.agent_id,
            "call_status": "ongoing",
            "direction": "inbound",
            "start_timestamp": self.start_timestamp,
        }
        if self.from_number:
            call["from_number"] = self.from_number
        if self.to_number:
            call["to_number"] = self.to_number
        call.update(extra)
        return call


class Caller:
    """Posts bodies to the service signed over their exact bytes, as Retell does."""

    def __init__(self, client: httpx.AsyncClient, key: str, out: TextIO) -> None:
        self.client = client
        self.key = key
        self.out = out

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        raw = orjson.dumps(body)
        return await self.client.post(
            path,
            content=raw,
            headers={"content-type": "application/json", "x-retell-signature": sign(raw, self.key)},
        )

    def say(self, text: str) -> None:
        self.out.write(text + "\n")

    def show_json(self, value: Any) -> None:
        self.out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


async def call_function(
    client: httpx.AsyncClient,
    key: str,
    identity: CallIdentity,
    function: str,
    args: dict[str, Any],
    *,
    out: TextIO,
    err: TextIO,
) -> int:
    """One custom-function request; prints what the agent would say and the JSON."""
    caller = Caller(client, key, out)
    try:
        status, body = await _function(caller, identity, function, args)
    except _Unreachable as failure:
        err.write(failure.message + "\n")
        return failure.exit_code
    if status != 200:
        err.write(f"The service answered HTTP {status}: {_error_text(body)}\n")
        return EXIT_SERVER_ERROR if status >= 500 else EXIT_REJECTED
    return EXIT_OK if body.get("ok") else EXIT_REFUSED


class _Unreachable(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


async def _send(caller: Caller, path: str, body: dict[str, Any]) -> httpx.Response:
    where = f"{caller.client.base_url.copy_with(path=path)}"
    try:
        return await caller.post(path, body)
    except httpx.TimeoutException:
        raise _Unreachable(EXIT_TIMEOUT, f"The service did not answer {where} in time.") from None
    except httpx.TransportError as error:
        raise _Unreachable(
            EXIT_UNREACHABLE,
            f"The service at {where} can't be reached ({type(error).__name__}); is it running?",
        ) from None


async def _function(
    caller: Caller, identity: CallIdentity, function: str, args: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    envelope = {"name": function, "call": identity.call_object(), "args": args}
    caller.say(f"> {function} {orjson.dumps(args).decode()}")
    response = await _send(caller, f"/retell/functions/{function}", envelope)
    body = _json_object(response)
    if response.status_code == 200 and "message" in body:
        caller.say(f"Agent says: {body['message']}")
    caller.show_json(body)
    return response.status_code, body


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json() if response.content else {}
    except ValueError:
        return {"error": "not_json", "message": response.text[:300]}
    return value if isinstance(value, dict) else {"value": value}


def _error_text(body: dict[str, Any]) -> str:
    if "error" in body or "message" in body:
        return f"{body.get('error', 'error')}: {body.get('message', '')}".strip()
    return "no details given."


def next_weekday(today: date) -> date:
    """The first Monday-to-Friday date after today."""
    day = today + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _today_in(zone_name: str | None) -> date:
    try:
        zone = ZoneInfo(zone_name) if zone_name else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    return datetime.now(zone).date()


async def simulate(
    client: httpx.AsyncClient,
    key: str,
    identity: CallIdentity,
    *,
    patient_name: str = "Sam Simulated",
    out: TextIO,
    err: TextIO,
) -> int:
    """A whole call: inbound, availability, booking, the call's events, then what was stored."""
    caller = Caller(client, key, out)
    problems: list[str] = []
    try:
        return await _simulate(caller, identity, patient_name, problems, err)
    except _Unreachable as failure:
        err.write(failure.message + "\n")
        return failure.exit_code


async def _simulate(
    caller: Caller,
    identity: CallIdentity,
    patient_name: str,
    problems: list[str],
    err: TextIO,
) -> int:
    say = caller.say
    say(f"Simulated call {identity.call_id} to agent {identity.agent_id}")
    say(f"  from {identity.from_number} to {identity.to_number}\n")

    say("1. Inbound webhook (POST /retell/inbound)")
    inbound = {
        "event": "call_inbound",
        "event_timestamp": int(time.time() * 1000),
        "call_inbound": {
            "call_id": identity.call_id,
            "agent_id": identity.agent_id,
            "from_number": identity.from_number,
            "to_number": identity.to_number,
        },
    }
    response = await _send(caller, "/retell/inbound", inbound)
    body = _json_object(response)
    variables: dict[str, Any] = {}
    if response.status_code == 200 and isinstance(body.get("call_inbound"), dict):
        variables = body["call_inbound"].get("dynamic_variables") or {}
        if variables.get("greeting"):
            say(f"Agent says: {variables['greeting']}")
        caller.show_json(body)
    else:
        problems.append(f"inbound webhook answered HTTP {response.status_code}")
        say(f"  HTTP {response.status_code}: {_error_text(body)}")

    day = next_weekday(_today_in(variables.get("timezone")))
    say(f"\n2. check_availability for {day.isoformat()}")
    status, result = await _function(
        caller, identity, "check_availability", {"date": day.isoformat(), "max_slots": 3}
    )
    if status == 200 and result.get("ok") and not result.get("slots"):
        say("  Nothing that day; looking at the next two weeks.")
        status, result = await _function(
            caller,
            identity,
            "check_availability",
            {"date": day.isoformat(), "days": 14, "max_slots": 3},
        )
    slots: list[dict[str, Any]] = (result.get("slots") or []) if status == 200 else []
    if not slots:
        err.write("No slot was offered, so nothing can be booked; stopping here.\n")
        return EXIT_REFUSED if status == 200 else EXIT_REJECTED

    slot = slots[0]
    say(f"\n3. book_appointment for the first slot offered ({slot['date']} {slot['time']})")
    status, booking = await _function(
        caller,
        identity,
        "book_appointment",
        {
            "patient_name": patient_name,
            "date": slot["date"],
            "time": slot["time"],
            "staff_member_id": slot["staff_member_id"],
            "appointment_type": "checkup",
        },
    )
    if status != 200 or not booking.get("booked"):
        problems.append("the booking was not made")

    ended_at = int(time.time() * 1000)
    events = _call_events(identity, patient_name, slot, ended_at)
    for number, (event, event_body) in enumerate(events, start=4):
        say(f"\n{number}. Call webhook {event} (POST /retell/webhook)")
        response = await _send(caller, "/retell/webhook", event_body)
        say(f"  HTTP {response.status_code}")
        if response.status_code != 204:
            problems.append(f"{event} answered HTTP {response.status_code}")
            say(f"  {_error_text(_json_object(response))}")

    say("\n7. What was stored: find_appointments for the caller")
    status, found = await _function(
        caller, identity, "find_appointments", {"patient_name": patient_name}
    )
    if status != 200 or not found.get("ok"):
        problems.append("find_appointments did not answer")

    if problems:
        err.write("Simulation finished with problems: " + "; ".join(problems) + ".\n")
        return EXIT_REJECTED
    say("\nSimulation finished: every step answered as Retell expects.")
    return EXIT_OK


def _call_events(
    identity: CallIdentity, patient_name: str, slot: dict[str, Any], ended_at: int
) -> list[tuple[str, dict[str, Any]]]:
    """call_started, call_ended and call_analyzed bodies shaped like Retell's."""
    started = identity.call_object(metadata={"source": "service call simulate"})
    transcript = (
        "Agent: Thank you for calling. How can I help you today?\n"
        f"User: Hi, this is {patient_name}. I'd like a checkup, as soon as possible.\n"
        f"Agent: I have {slot['date']} at {slot['time']} with {slot['staff_name']}. "
        "Shall I book it?\n"
        "User: Yes, please.\n"
        "Agent: You're booked. Goodbye!\n"
    )
    ended = {
        **started,
        "call_status": "ended",
        "end_timestamp": ended_at,
        "duration_ms": max(ended_at - identity.start_timestamp, 1000),
        "disconnection_reason": "user_hangup",
        "transcript": transcript,
    }
    analyzed = {
        **ended,
        "call_analysis": {
            "call_summary": f"{patient_name} booked a checkup on {slot['date']} at {slot['time']}.",
            "user_sentiment": "Positive",
            "call_successful": True,
            "in_voicemail": False,
            "custom_analysis_data": {"simulated": True},
        },
    }
    return [
        ("call_started", {"event": "call_started", "call": started}),
        ("call_ended", {"event": "call_ended", "call": ended}),
        ("call_analyzed", {"event": "call_analyzed", "call": analyzed}),
    ]


def service_client(base_url: str, timeout_seconds: float) -> httpx.AsyncClient:
    """An httpx client for the service, with an explicit timeout."""
    return httpx.AsyncClient(base_url=base_url, timeout=timeout_seconds)


__all__ = [
    "DEFAULT_BASE_URL",
    "EXIT_USAGE",
    "CallIdentity",
    "UsageError",
    "call_function",
    "parse_assignments",
    "service_client",
    "simulate",
]

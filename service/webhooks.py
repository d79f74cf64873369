"""POST /retell/webhook (call events) and POST /retell/inbound (the inbound-call webhook)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, Strict, StrictBool, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServiceError, json_response
from service.retell import EpochMs, RetellId, parse_object, validation_message
from service.speech import spoken_date, spoken_list, spoken_time
from service.state import DATABASE_UNAVAILABLE, signed_body, state_of

log = structlog.get_logger(__name__)

STORED_EVENTS = frozenset({"call_started", "call_ended", "call_analyzed"})
# Event names Retell documents; anything else is counted as "other" so that a client can't
# create metric series at will.
KNOWN_EVENTS = STORED_EVENTS | {
    "transcript_updated",
    "transfer_started",
    "transfer_bridged",
    "transfer_cancelled",
    "transfer_ended",
}

# Retell rings the caller while it waits for the inbound answer, and retries for 10 s each; past
# this the agent starts with its own defaults rather than keep the caller waiting.
INBOUND_DEADLINE_SECONDS = 0.8
INBOUND_FAILURES: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)

# The dynamic variables every inbound answer carries; "" when one doesn't apply, because Retell
# speaks an unset variable literally.
INBOUND_VARIABLES = (
    "business_name",
    "business_phone",
    "business_address",
    "timezone",
    "is_open_now",
    "today_hours",
    "greeting",
    "call_script",
    "forward_enabled",
    "voicemail_enabled",
    "voicemail_greeting",
    "staff_names",
    "caller_name",
    "next_appointment",
)


class CallAnalysis(BaseModel):
    """call_analyzed's analysis; typed strictly because the database casts these fields."""

    model_config = ConfigDict(extra="ignore")

    call_summary: str | None = None
    user_sentiment: str | None = None
    call_successful: StrictBool | None = None
    in_voicemail: StrictBool | None = None
    custom_analysis_data: Any = None


class EventCall(BaseModel):
    """The call object of a call event, as far as it is stored in columns."""

    model_config = ConfigDict(extra="ignore")

    call_id: RetellId
    agent_id: RetellId | None = None
    call_type: str | None = None
    call_status: str | None = None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    start_timestamp: Annotated[EpochMs, Strict()] | None = None
    end_timestamp: Annotated[EpochMs, Strict()] | None = None
    duration_ms: StrictInt | None = None
    disconnection_reason: str | None = None
    transcript: str | None = None
    # Stored as JSON whatever their shape: only fields the database casts are typed strictly.
    transcript_object: Any = None
    recording_url: str | None = None
    public_log_url: str | None = None
    call_cost: Any = None
    metadata: Any = None
    call_analysis: CallAnalysis | None = None


class CallEvent(BaseModel):
    """`{"event", "call"}` for the events that are stored."""

    model_config = ConfigDict(extra="ignore")

    event: str
    call: EventCall


class InboundCall(BaseModel):
    """The inbound call Retell is about to connect; every field is optional on Retell's side."""

    model_config = ConfigDict(extra="ignore")

    agent_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    call_id: str | None = None


class InboundEvent(BaseModel):
    """`{"event": "call_inbound", "call_inbound": {...}}`."""

    model_config = ConfigDict(extra="ignore")

    event: str | None = None
    call_inbound: InboundCall


CALL_EVENT_SQL = "select rx_call_event($1, $2::text::jsonb)"


async def call_event(request: Request) -> Response:
    """Store call_started, call_ended and call_analyzed; 204 once the row is committed."""
    state = state_of(request)
    raw = await signed_body(request, state.settings.max_webhook_body_bytes)
    body = parse_object(raw)
    event_name = body.get("event")
    # Not `event`: that key is the log line's own name in structlog.
    structlog.contextvars.bind_contextvars(
        retell_event=event_name if isinstance(event_name, str) else None
    )
    # Any JSON value may arrive here, and a list is not even hashable: only known names count.
    if not isinstance(event_name, str) or event_name not in STORED_EVENTS:
        label = event_name if isinstance(event_name, str) and event_name in KNOWN_EVENTS else None
        state.metrics.webhook_event(label or "other", "ignored")
        return Response(status_code=204)
    try:
        event = CallEvent.model_validate(body)
    except ValidationError as error:
        raise ServiceError(400, "malformed_event", validation_message(error)) from None
    structlog.contextvars.bind_contextvars(call_id=event.call.call_id, agent_id=event.call.agent_id)
    try:
        # The exact bytes go to the database (parsed there once): no re-serialising of what can
        # be megabytes of transcript.
        result = await state.fetchval(CALL_EVENT_SQL, event.event, raw.decode())
    except asyncpg.CheckViolationError as error:
        raise ServiceError(422, "inconsistent_call", error.args[0]) from None
    except asyncpg.DataError:
        # e.g. a \u0000 in a string, which PostgreSQL's jsonb cannot hold.
        raise ServiceError(
            400, "unstorable_event", "The event holds text the database cannot store."
        ) from None
    if result.get("problem") == "unknown_agent":
        # Acknowledged all the same: a retry would meet the same answer.
        log.warning("call_event_unknown_agent")
        state.metrics.webhook_event(event.event, "unknown_agent")
        return Response(status_code=204)
    if result.get("problem") == "no_call_id":
        raise ServiceError(400, "malformed_event", "The call has an empty `call_id`.")
    structlog.contextvars.bind_contextvars(call_status=result.get("call_status"))
    # `duplicate` is counted once rx_call_event reports that it already held this event.
    state.metrics.webhook_event(event.event, "duplicate" if result.get("duplicate") else "stored")
    return Response(status_code=204)


INBOUND_SQL = "select rx_inbound($1, $2, $3)"


async def inbound(request: Request) -> Response:
    """Answer the inbound-call webhook with the clinic's dynamic variables, within a second."""
    state = state_of(request)
    raw = await signed_body(request, state.settings.max_body_bytes)
    try:
        envelope = InboundEvent.model_validate(parse_object(raw))
    except ValidationError as error:
        raise ServiceError(400, "malformed_event", validation_message(error)) from None
    call = envelope.call_inbound
    structlog.contextvars.bind_contextvars(
        retell_event="call_inbound", call_id=call.call_id, agent_id=call.agent_id
    )
    if not call.agent_id:
        return json_response({"call_inbound": {}})
    try:
        found = await state.fetchval_within(
            INBOUND_DEADLINE_SECONDS, INBOUND_SQL, call.agent_id, call.from_number, state.clock()
        )
    except INBOUND_FAILURES as error:
        # Retell's defaults now are better than a caller hearing rings while it retries.
        log.warning("inbound_fallback", error=type(error).__name__)
        state.metrics.webhook_event("call_inbound", "fallback")
        return json_response({"call_inbound": {}})
    if found is None:
        log.warning("inbound_unknown_agent")
        state.metrics.webhook_event("call_inbound", "unknown_agent")
        return json_response({"call_inbound": {}})
    state.metrics.webhook_event("call_inbound", "answered")
    return json_response({"call_inbound": {"dynamic_variables": dynamic_variables(found)}})


def dynamic_variables(clinic: dict[str, Any]) -> dict[str, str]:
    """rx_inbound's answer as Retell's dynamic variables: every one present, every one a string."""
    appointment = clinic.get("next_appointment")
    spoken: dict[str, Any] = {
        **clinic,
        "is_open_now": _flag(clinic.get("is_open_now")),
        "forward_enabled": _flag(clinic.get("forward_enabled")),
        "voicemail_enabled": _flag(clinic.get("voicemail_enabled")),
        "today_hours": spoken_hours(clinic.get("today_hours")),
        "staff_names": spoken_list(clinic.get("staff_names") or [], "and"),
        "caller_name": appointment["patient_name"] if appointment else "",
        "next_appointment": (
            f"{spoken_date(appointment['date'])} at {spoken_time(appointment['time'])}"
            f" with {appointment['staff_name']}"
            if appointment
            else ""
        ),
    }
    return {name: _text(spoken.get(name)) for name in INBOUND_VARIABLES}


def spoken_hours(intervals: list[dict[str, str]] | None) -> str:
    """[{"open": "08:00", "close": "12:00"}, ...] -> '8:00 AM to 12:00 PM and 1:00 PM to ...'.

    None (no business_hours at all) means always open; [] means closed today.
    """
    if intervals is None:
        return "open 24 hours"
    if not intervals:
        return "closed"
    return spoken_list([f"{_clock(i['open'])} to {_clock(i['close'])}" for i in intervals], "and")


def _clock(value: str) -> str:
    # business_hours may close at 24:00, which is not a time of day.
    return "midnight" if value.startswith("24:") else spoken_time(value)


def _flag(value: Any) -> str:
    return "true" if value is True else "false"


def _text(value: Any) -> str:
    return "" if value is None else str(value)

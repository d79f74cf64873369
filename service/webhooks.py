"""POST /retell/webhook (call events) and POST /retell/inbound (the inbound-call webhook)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, Strict, StrictBool, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServiceError, json_response
from service.retell import EpochMs, RetellId, parse_object, signed_body, validation_message
from service.speech import OpenInterval, Visit, spoken_hours, spoken_list, spoken_slot
from service.state import DATABASE_UNAVAILABLE, State, state_of

log = structlog.get_logger(__name__)

STORED_EVENTS = frozenset({"call_started", "call_ended", "call_analyzed"})

# Retell rings the caller while it waits for the inbound answer, and retries for 10 s each; past
# this the agent starts with its own defaults rather than keep the caller waiting.
INBOUND_DEADLINE_SECONDS = 0.8

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


class NextAppointment(Visit):
    """The caller's next appointment, as rx_inbound finds it by the calling number."""

    patient_name: str


class InboundClinic(BaseModel):
    """rx_inbound's answer: the clinic as the agent should know it before it answers."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    business_name: str | None = None
    business_phone: str | None = None
    business_address: str | None = None
    timezone: str | None = None
    is_open_now: bool | None = None
    # None: no business_hours at all (always open); []: closed today.
    today_hours: list[OpenInterval] | None = None
    greeting: str | None = None
    call_script: str | None = None
    forward_enabled: bool | None = None
    voicemail_enabled: bool | None = None
    voicemail_greeting: str | None = None
    staff_names: list[str] | None = None
    next_appointment: NextAppointment | None = None


class StoredEvent(BaseModel):
    """rx_call_event's answer: the call's status now, or why nothing was stored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    problem: str | None = None
    call_status: str | None = None
    # True when the call's log already held this very event (a retry).
    duplicate: bool = False


CALL_EVENT_SQL = "select rx_call_event($1, $2::text::jsonb)"
# rx_call_event's problems for an event it keeps nothing of, by metric outcome: no active clinic
# has the agent id, or the call id's row belongs to another clinic (nothing is merged into it).
NOT_STORED = {"unknown_agent": "unknown_agent", "call_of_another_clinic": "other_clinic"}


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
        # Counted under names Retell documents only (metrics maps the rest to "other").
        state.metrics.webhook_event(event_name if isinstance(event_name, str) else "", "ignored")
        return Response(status_code=204)
    try:
        event = CallEvent.model_validate(body)
    except ValidationError as error:
        raise ServiceError(400, "malformed_event", validation_message(error)) from None
    structlog.contextvars.bind_contextvars(call_id=event.call.call_id, agent_id=event.call.agent_id)
    try:
        # The exact bytes go to the database (parsed there once): no re-serialising of what can
        # be megabytes of transcript.
        stored = await state.fetchval(CALL_EVENT_SQL, event.event, raw.decode())
    except asyncpg.CheckViolationError as error:
        raise ServiceError(422, "inconsistent_call", error.args[0]) from None
    except asyncpg.DataError:
        # e.g. a \u0000 in a string, which PostgreSQL's jsonb cannot hold.
        raise ServiceError(
            400, "unstorable_event", "The event holds text the database cannot store."
        ) from None
    result = StoredEvent.model_validate(stored)
    if result.problem in NOT_STORED:
        # Acknowledged all the same: a retry would meet the same answer.
        outcome = NOT_STORED[result.problem]
        log.warning("call_event_not_stored", reason=outcome)
        state.metrics.webhook_event(event.event, outcome)
        return Response(status_code=204)
    if result.problem == "no_call_id":
        raise ServiceError(400, "malformed_event", "The call has an empty `call_id`.")
    structlog.contextvars.bind_contextvars(call_status=result.call_status)
    # `duplicate` is counted once rx_call_event reports that it already held this event.
    state.metrics.webhook_event(event.event, "duplicate" if result.duplicate else "stored")
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
    # Retell's defaults now are better than a caller hearing rings while it retries: any
    # database failure, unavailable or an error, answers with none.
    except DATABASE_UNAVAILABLE as error:
        return _inbound_fallback(state, error)
    except asyncpg.PostgresError as error:
        return _inbound_fallback(state, error)
    if found is None:
        log.warning("inbound_unknown_agent")
        state.metrics.webhook_event("call_inbound", "unknown_agent")
        return json_response({"call_inbound": {}})
    variables = dynamic_variables(InboundClinic.model_validate(found))
    state.metrics.webhook_event("call_inbound", "answered")
    return json_response({"call_inbound": {"dynamic_variables": variables}})


def _inbound_fallback(state: State, error: BaseException) -> Response:
    log.warning("inbound_fallback", error=type(error).__name__)
    state.metrics.webhook_event("call_inbound", "fallback")
    return json_response({"call_inbound": {}})


def dynamic_variables(clinic: InboundClinic) -> dict[str, str]:
    """rx_inbound's answer as Retell's dynamic variables: every one present, every one a string."""
    appointment = clinic.next_appointment
    spoken: dict[str, object] = {
        **clinic.model_dump(),
        "is_open_now": _flag(clinic.is_open_now),
        "forward_enabled": _flag(clinic.forward_enabled),
        "voicemail_enabled": _flag(clinic.voicemail_enabled),
        "today_hours": spoken_hours(clinic.today_hours),
        "staff_names": spoken_list(clinic.staff_names or [], "and"),
        "caller_name": appointment["patient_name"] if appointment else "",
        "next_appointment": spoken_slot(appointment) if appointment else "",
    }
    return {name: _text(spoken.get(name)) for name in INBOUND_VARIABLES}


def _flag(value: bool | None) -> str:
    return "true" if value is True else "false"


def _text(value: object) -> str:
    return "" if value is None else str(value)

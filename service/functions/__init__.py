"""POST /retell/functions/{function_name}: the custom functions the Retell agent calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServiceError, json_response
from service.functions.args import Args, normalize_phone, refusal_for, region_of
from service.retell import Call, parse_object
from service.state import State, signed_body, state_of

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Context:
    """Who is asking: the clinic's agent, the live call, the caller's region, and now."""

    agent_id: str
    call: Call
    region: str
    now: datetime

    @property
    def caller_number(self) -> str | None:
        """The caller's own number in E.164: from_number on inbound calls, to_number on outbound
        ones; None when the call has none (a web call, withheld caller id sent as "anonymous",
        or whatever else a SIP trunk puts there that is not a phone number)."""
        raw = self.call.to_number if self.call.direction == "outbound" else self.call.from_number
        return normalize_phone(raw, self.region) if raw else None


class Refusal(Exception):
    """Arguments that can't be honoured: answered 200 with ok false and this sentence."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


@dataclass(frozen=True)
class Function:
    """One custom function: its arguments, its database function, and how it speaks."""

    name: str
    description: str
    args: type[Args]
    database_function: str
    speak: Callable[[dict[str, Any], Any, Context], dict[str, Any]]
    # Turns validated arguments into the database's JSON (e.g. phones to E.164); may refuse.
    prepare: Callable[[Any, Context], dict[str, Any]] | None = None
    refusal_fields: Callable[[], dict[str, Any]] = dict

    @property
    def sql(self) -> str:
        return f"select {self.database_function}($1, $2::jsonb, $3::jsonb, $4, $5)"


def _registry() -> dict[str, Function]:
    # Imported here so that each family module can import Context and Refusal from this one.
    from service.functions import availability, booking, forwarding, messages

    found: dict[str, Function] = {}
    for module in (availability, booking, messages, forwarding):
        for function in module.FUNCTIONS:
            found[function.name] = function
    return found


_FUNCTIONS: dict[str, Function] = {}


def functions() -> dict[str, Function]:
    """Every custom function by name."""
    if not _FUNCTIONS:
        _FUNCTIONS.update(_registry())
    return _FUNCTIONS


def _query_param(request: Request, name: str) -> str | None:
    # Retell's requests carry no query string; skip parsing an empty one on every request.
    if not request.scope["query_string"]:
        return None
    return request.query_params.get(name) or None


def _envelope(body: dict[str, Any], request: Request) -> tuple[str, Call, dict[str, Any]]:
    """Split a request into (agent_id, call, args), for both of Retell's payload styles."""
    query_agent = _query_param(request, "agent_id")
    if "call" in body:
        if not isinstance(body["call"], dict):
            raise ServiceError(422, "malformed_envelope", "`call` must be an object.")
        try:
            call = Call.model_validate(body["call"])
        except ValidationError:
            raise ServiceError(
                422, "malformed_envelope", "`call` has fields of the wrong type."
            ) from None
        args = body.get("args", {})
        agent_id = call.agent_id or query_agent
    else:
        if query_agent is None:
            raise ServiceError(
                422,
                "malformed_envelope",
                "The body has no `call`, and no `agent_id` query parameter was given.",
            )
        call = Call(call_id=_query_param(request, "call_id"), agent_id=query_agent)
        args = body
        agent_id = query_agent
    if not isinstance(args, dict):
        raise ServiceError(422, "malformed_envelope", "`args` must be an object.")
    if not agent_id or not isinstance(agent_id, str):
        raise ServiceError(422, "malformed_envelope", "The call has no `agent_id`.")
    return agent_id, call, args


async def endpoint(request: Request) -> Response:
    state = state_of(request)
    raw = await signed_body(request, state.settings.max_body_bytes)
    name = request.path_params["function_name"]
    function = functions().get(name)
    if function is None:
        raise ServiceError(404, "unknown_function", f"There is no function named {name!r}.")
    agent_id, call, raw_args = _envelope(parse_object(raw), request)
    structlog.contextvars.bind_contextvars(function=name, agent_id=agent_id, call_id=call.call_id)
    clinic_number = call.from_number if call.direction == "outbound" else call.to_number
    context = Context(
        agent_id=agent_id,
        call=call,
        region=region_of(clinic_number) or state.settings.default_phone_region.upper(),
        now=state.clock(),
    )
    try:
        args = function.args.model_validate(raw_args)
        prepared = function.prepare(args, context) if function.prepare else args.for_database()
    except ValidationError as error:
        return _refuse(state, function, refusal_for(error, function.args), {})
    except Refusal as refusal:
        return _refuse(state, function, refusal.message, refusal.fields)

    result = await state.fetchval(
        function.sql,
        agent_id,
        call.for_database(),
        prepared,
        context.now,
        state.settings.min_notice_minutes,
    )
    if result.get("problem") == "unknown_agent":
        raise ServiceError(
            404, "unknown_agent", "No active clinic is configured for this agent_id."
        )
    try:
        body = function.speak(result, args, context)
    except Refusal as refusal:
        return _refuse(state, function, refusal.message, refusal.fields)
    structlog.contextvars.bind_contextvars(ok=body["ok"])
    state.metrics.function_result(name, body)
    return json_response(body)


def _refuse(state: State, function: Function, message: str, fields: dict[str, Any]) -> Response:
    structlog.contextvars.bind_contextvars(ok=False)
    body = {"ok": False, **function.refusal_fields(), **fields, "message": message}
    state.metrics.function_result(function.name, body)
    return json_response(body)

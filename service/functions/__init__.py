"""POST /retell/functions/{function_name}: the custom functions the Retell agent calls."""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServiceError, json_response
from service.functions import availability, booking, forwarding, messages
from service.functions.args import refusal_for, region_of
from service.functions.base import Context, Function, Refusal
from service.functions.problems import refusal_from
from service.retell import function_envelope, parse_object, signed_body
from service.state import State, state_of

log = structlog.get_logger(__name__)

# Every custom function by name, in the order the tools are listed to the agent.
FUNCTIONS: dict[str, Function[Any, Any]] = {
    function.name: function
    for module in (availability, booking, messages, forwarding)
    for function in module.FUNCTIONS
}


async def endpoint(request: Request) -> Response:
    state = state_of(request)
    raw = await signed_body(request, state.settings.max_body_bytes)
    name = request.path_params["function_name"]
    function = FUNCTIONS.get(name)
    if function is None:
        raise ServiceError(404, "unknown_function", f"There is no function named {name!r}.")
    agent_id, call, raw_args = function_envelope(parse_object(raw), request)
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

    result: dict[str, Any] = await state.fetchval(
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
    if result.get("problem") is not None:
        refused = refusal_from(result)
        return _refuse(state, function, refused.message, refused.fields)
    body = function.speak(function.result.model_validate(result), args, context)
    structlog.contextvars.bind_contextvars(ok=body["ok"])
    state.metrics.function_result(name, body)
    return json_response(body)


def _refuse(
    state: State, function: Function[Any, Any], message: str, fields: dict[str, object]
) -> Response:
    structlog.contextvars.bind_contextvars(ok=False)
    body = {"ok": False, **function.refusal_fields(), **fields, "message": message}
    state.metrics.function_result(function.name, body)
    return json_response(body)

"""Everything Retell-specific on the way in: the signature check and the request envelopes."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.requests import Request

from service.errors import ServiceError
from service.state import state_of

_SIGNATURE = re.compile(r"v=(\d{1,16}),d=([0-9a-f]{64})")


def sign(raw_body: bytes, api_key: str, timestamp_ms: int | None = None) -> str:
    """The X-Retell-Signature header Retell would send for this exact body."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return f"v={ts},d={_digest(raw_body, str(ts), api_key)}"


def _digest(raw_body: bytes, timestamp: str, api_key: str) -> str:
    # One-shot hmac.digest runs in C; hmac.new builds a Python HMAC object for each request.
    return hmac.digest(api_key.encode(), raw_body + timestamp.encode(), hashlib.sha256).hex()


def signature_is_valid(
    raw_body: bytes,
    header: str | None,
    api_key: str,
    *,
    tolerance_seconds: int = 300,
    now_ms: int | None = None,
) -> bool:
    """Check the header over the raw bytes: well formed, fresh (either direction), and matching.

    The digest comparison runs in constant time.
    """
    if not header:
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    timestamp = int(match[1])
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - timestamp) > tolerance_seconds * 1000:
        return False
    return hmac.compare_digest(_digest(raw_body, match[1], api_key), match[2])


async def read_body(request: Request, limit: int) -> bytes:
    """Read the raw body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "body_too_large", f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(
                413, "body_too_large", f"The request body is larger than {limit} bytes."
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def signed_body(request: Request, limit: int) -> bytes:
    """The raw body of a /retell/* request, after its size and its signature are checked."""
    state = state_of(request)
    raw = await read_body(request, limit)
    settings = state.settings
    if settings.insecure_skip_signature_check:
        return raw
    key = settings.retell_api_key.get_secret_value() if settings.retell_api_key else ""
    if not key or not signature_is_valid(
        raw,
        request.headers.get("x-retell-signature"),
        key,
        tolerance_seconds=settings.signature_tolerance_seconds,
        now_ms=int(state.clock().timestamp() * 1000),
    ):
        raise ServiceError(401, "invalid_signature", "The X-Retell-Signature header is not valid.")
    return raw


def parse_object(raw_body: bytes) -> dict[str, Any]:
    """Parse a JSON object, or refuse with 400."""
    try:
        value = orjson.loads(raw_body)
    except orjson.JSONDecodeError:
        raise ServiceError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ServiceError(400, "invalid_json", "The request body must be a JSON object.")
    # PostgreSQL's text and jsonb can't hold U+0000; refused here, before anything is stored.
    # JSON can only spell it as an escape, so bodies without one skip the walk.
    if b"\\u0000" in raw_body and _holds_nul(value):
        raise ServiceError(
            400, "unstorable_text", "The request holds a NUL character, which cannot be stored."
        )
    return value


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


# Retell's call and agent ids are a few dozen characters; the database holds every stored one
# to this length (schema/0002_tenancy.sql), and longer ones are refused before it.
RetellId = Annotated[str, StringConstraints(max_length=128)]
# Milliseconds since 1970 until the end of year 9999: what both PostgreSQL and Python can hold.
EpochMs = Annotated[int, Field(ge=0, le=253_402_300_799_999)]


class Call(BaseModel):
    """The fields of Retell's call object this service reads; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")

    call_id: RetellId | None = None
    agent_id: RetellId | None = None
    call_type: str | None = None
    call_status: str | None = None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    start_timestamp: EpochMs | None = None

    def for_database(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _query_param(request: Request, name: str) -> str | None:
    # Retell's requests carry no query string; skip parsing an empty one on every request.
    if not request.scope["query_string"]:
        return None
    return request.query_params.get(name) or None


def function_envelope(body: dict[str, Any], request: Request) -> tuple[str, Call, dict[str, Any]]:
    """Split a function call into (agent_id, call, args), for both of Retell's payload styles."""
    query_agent = _query_param(request, "agent_id")
    if "call" in body:
        if not isinstance(body["call"], dict):
            raise ServiceError(422, "malformed_envelope", "`call` must be an object.")
        call = _call(body["call"])
        args = body.get("args", {})
        agent_id = call.agent_id or query_agent
    else:
        if query_agent is None:
            raise ServiceError(
                422,
                "malformed_envelope",
                "The body has no `call`, and no `agent_id` query parameter was given.",
            )
        call = _call({"call_id": _query_param(request, "call_id"), "agent_id": query_agent})
        args = body
        agent_id = query_agent
    if not isinstance(args, dict):
        raise ServiceError(422, "malformed_envelope", "`args` must be an object.")
    if not agent_id or not isinstance(agent_id, str):
        raise ServiceError(422, "malformed_envelope", "The call has no `agent_id`.")
    return agent_id, call, args


def _call(fields: dict[str, Any]) -> Call:
    try:
        return Call.model_validate(fields)
    except ValidationError as error:
        raise ServiceError(
            422, "malformed_envelope", "In `call`: " + validation_message(error)
        ) from None


def validation_message(error: ValidationError) -> str:
    """A short sentence naming the fields that failed, for error bodies."""
    fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in error.errors()})
    return "These fields are missing or malformed: " + ", ".join(fields) + "."

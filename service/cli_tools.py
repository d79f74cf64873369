"""`tools`: the Retell custom-function definitions, and syncing them onto a Retell LLM."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

import httpx
import orjson
from pydantic import BaseModel

from service.functions import FUNCTIONS
from service.functions.base import Function

# Exit codes shared by the operator commands, so scripts can tell failures apart.
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REJECTED = 4
EXIT_SERVER_ERROR = 5
EXIT_TIMEOUT = 6
EXIT_UNREACHABLE = 7

# Printed URLs use this until --base-url names the service's public address.
PLACEHOLDER_BASE_URL = "https://YOUR-SERVICE.example.com"

# What LocalTime accepts: 24-hour HH:MM (a single-digit hour too), 00:00 to 23:59.
TIME_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"

# JSON Schema keywords a model acts on; the rest (titles, pydantic's defaults of null) is noise.
_KEPT_KEYWORDS = (
    "type",
    "description",
    "enum",
    "const",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "items",
    "properties",
    "required",
)

# Every function answers within the service's own deadline (3 s by default, then a 503), so
# Retell's two-minute default would only keep a caller in silence after something broke.
DEFAULT_TIMEOUT_MS = 8000


class ToolStyle(BaseModel):
    """How the agent behaves around one function call."""

    guidance: str = ""
    speak_during_execution: bool = False
    execution_message_description: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    response_variables: dict[str, str] | None = None


# Reads answer in tens of milliseconds, so the agent stays quiet rather than talk over the
# answer; writes get a short acknowledgement because the caller has just committed to something.
STYLES: dict[str, ToolStyle] = {
    "check_availability": ToolStyle(
        guidance=(
            " Dates are YYYY-MM-DD and times HH:MM (24-hour) in the clinic's time zone; turn "
            "'next Tuesday' into a date first. Read the result's message to the caller."
        ),
    ),
    "book_appointment": ToolStyle(
        guidance=(
            " Confirm the patient's full name, the date and the time first. The caller's own "
            "number is used unless patient_phone is given."
        ),
        speak_during_execution=True,
        execution_message_description="A few words saying you are booking it now.",
    ),
    "find_appointments": ToolStyle(
        guidance=" Uses the caller's number unless patient_phone and patient_name are given.",
    ),
    "cancel_appointment": ToolStyle(
        guidance=(
            " Name the appointment by appointment_id, or by its date (and time if there are "
            "several that day). Confirm with the caller before calling."
        ),
        speak_during_execution=True,
        execution_message_description="A few words saying you are cancelling it now.",
    ),
    "reschedule_appointment": ToolStyle(
        guidance=(
            " Name the appointment by appointment_id, or by its date (and time); give new_date "
            "and new_time. A refused move leaves the original appointment unchanged."
        ),
        speak_during_execution=True,
        execution_message_description="A few words saying you are moving the appointment now.",
    ),
    "leave_voicemail": ToolStyle(
        guidance=" Put the caller's message in their own words; mark urgent only if they say so.",
    ),
    "forward_call": ToolStyle(
        guidance=(
            " The transfer itself is the transfer_call tool, whose number is {{forward_number}}."
        ),
        speak_during_execution=True,
        execution_message_description="A few words saying you will see if someone is available.",
        response_variables={"forward_number": "forward_number"},
    ),
}


def llm_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's arguments as a JSON Schema an LLM reads well: inlined, untitled, no nulls."""
    raw = model.model_json_schema()
    defs: dict[str, Any] = raw.get("$defs", {})
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            name: _clean(prop, defs) for name, prop in raw.get("properties", {}).items()
        },
    }
    if raw.get("required"):
        schema["required"] = list(raw["required"])
    return schema


def _clean(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        # Optional fields are `X | None`: the model should leave them out, never send null.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            node = {**_clean(options[0], defs), **outer}
        else:
            node = {**outer, "anyOf": [_clean(o, defs) for o in options]}
    out: dict[str, Any] = {}
    for key in _KEPT_KEYWORDS:
        if key in node:
            out[key] = node[key]
    if "anyOf" in node:
        out["anyOf"] = node["anyOf"]
    if "items" in out:
        out["items"] = _clean(out["items"], defs)
    if "properties" in out:
        out["properties"] = {k: _clean(v, defs) for k, v in out["properties"].items()}
    if out.get("format") == "time":
        # JSON Schema's `time` wants seconds and an offset; the service wants wall-clock HH:MM.
        del out["format"]
        out["pattern"] = TIME_PATTERN
    default = node.get("default")
    if default is not None:
        described = out.get("description", "").rstrip()
        if "default" not in described.lower():
            sentence = f"Default: {orjson.dumps(default).decode()}."
            out["description"] = f"{described} {sentence}".strip()
    return out


def tool_definition(function: Function[Any, Any], base_url: str) -> dict[str, Any]:
    """One Retell custom-function tool (`general_tools` entry) for a function of ours."""
    style = STYLES.get(function.name, ToolStyle())
    tool: dict[str, Any] = {
        "type": "custom",
        "name": function.name,
        "description": function.description + style.guidance,
        "url": f"{base_url.rstrip('/')}/retell/functions/{function.name}",
        "method": "POST",
        "parameters": llm_schema(function.args),
        "speak_during_execution": style.speak_during_execution,
        "speak_after_execution": True,
        "timeout_ms": style.timeout_ms,
    }
    if style.speak_during_execution and style.execution_message_description:
        tool["execution_message_description"] = style.execution_message_description
    if style.response_variables:
        tool["response_variables"] = dict(style.response_variables)
    return tool


def tool_definitions(base_url: str) -> list[dict[str, Any]]:
    """Every custom function's tool, in the registry's order."""
    return [tool_definition(f, base_url) for f in FUNCTIONS.values()]


def malformed_base_url(base_url: str) -> str | None:
    """Why `base_url` is not a usable http(s) URL (one line), or None when it is one."""
    problem = f"--base-url {base_url!r} is not a URL like http://HOST:PORT"
    try:
        url = httpx.URL(base_url)
        port = url.port
    except httpx.InvalidURL as error:
        return f"{problem} ({error})."
    if "://" not in base_url:
        return f"{problem} (did you mean http://{base_url}?)."
    if url.scheme not in ("http", "https") or not url.host:
        return f"{problem}."
    if port is not None and not 1 <= port <= 65535:
        return f"{problem} (port {port} is out of range)."
    if any(c.isspace() for c in base_url):
        return f"{problem} (it has a space)."
    return None


def base_url_problem(base_url: str) -> str | None:
    """Why Retell could not reach functions under this URL, or None when it looks right."""
    malformed = malformed_base_url(base_url)
    if malformed:
        return malformed
    url = httpx.URL(base_url)
    if url.host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or url.host.endswith(".local"):
        return (
            f"--base-url {base_url} is only reachable from this machine; Retell needs the "
            "service's public URL."
        )
    return None


def print_tools(base_url: str, out: TextIO) -> int:
    out.write(orjson.dumps(tool_definitions(base_url), option=orjson.OPT_INDENT_2).decode())
    out.write("\n")
    return EXIT_OK


# ---- sync onto a Retell LLM ----------------------------------------------------------------


class RetellFailure(Exception):
    """A Retell API call that failed, with the exit code and one line for the operator."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def retell_client(base_url: str, api_key: str, timeout_seconds: float) -> httpx.AsyncClient:
    """An httpx client for Retell's API: bearer auth and an explicit timeout."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {api_key}", "accept": "application/json"},
        timeout=timeout_seconds,
    )


async def _retell(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    what = f"{method} {path}"
    try:
        response = await client.request(method, path, json=body)
    except httpx.TimeoutException:
        raise RetellFailure(
            EXIT_TIMEOUT, f"Retell did not answer {what} in time; nothing was changed."
        ) from None
    except httpx.TransportError as error:
        raise RetellFailure(
            EXIT_UNREACHABLE, f"Retell could not be reached for {what}: {type(error).__name__}."
        ) from None
    status = response.status_code
    if status in (401, 403):
        raise RetellFailure(
            EXIT_AUTH,
            f"Retell refused the API key (HTTP {status}) for {what}: check RETELL_API_KEY.",
        )
    if 400 <= status < 500:
        raise RetellFailure(
            EXIT_REJECTED, f"Retell rejected {what} (HTTP {status}): {_reason(response)}"
        )
    if status >= 500:
        raise RetellFailure(
            EXIT_SERVER_ERROR,
            f"Retell failed on {what} (HTTP {status}); try again later: {_reason(response)}",
        )
    try:
        value = response.json() if response.content else {}
    except ValueError:
        raise RetellFailure(
            EXIT_SERVER_ERROR, f"Retell answered {what} with something that is not JSON."
        ) from None
    if not isinstance(value, dict):
        raise RetellFailure(EXIT_SERVER_ERROR, f"Retell answered {what} with unexpected JSON.")
    return value


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error_message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return " ".join(str(body[key]).split())[:300]
    text = " ".join(response.text.split())[:300]
    return text or "no details given."


def merge_tools(
    existing: Iterable[dict[str, Any]], ours: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The LLM's tools with ours replaced in place or appended, and what happened to each of ours.

    Tools with other names are kept exactly as they are.
    """
    by_name = {tool["name"]: tool for tool in ours}
    changes: dict[str, str] = {}
    merged: list[dict[str, Any]] = []
    for tool in existing:
        name = tool.get("name")
        if isinstance(name, str) and name in by_name:
            if name in changes:
                continue  # a duplicate of one of ours: the replacement is already in place
            new = by_name[name]
            changes[name] = "unchanged" if _same(tool, new) else "changed"
            merged.append(new)
        else:
            merged.append(tool)
    for name, tool in by_name.items():
        if name not in changes:
            changes[name] = "added"
            merged.append(tool)
    return merged, changes


def _same(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    # Retell echoes tools back with its own defaults filled in: compare only what we set.
    return all(current.get(key) == value for key, value in wanted.items())


def _changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [key for key, value in wanted.items() if current.get(key) != value]


async def sync_tools(
    client: httpx.AsyncClient,
    llm_id: str,
    base_url: str,
    *,
    apply: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """Show (and with apply, write) the difference between the LLM's tools and ours."""
    try:
        llm = await _retell(client, "GET", f"/get-retell-llm/{llm_id}")
        existing: list[dict[str, Any]] = [
            t for t in (llm.get("general_tools") or []) if isinstance(t, dict)
        ]
        ours = tool_definitions(base_url)
        merged, changes = merge_tools(existing, ours)
        current = {t.get("name"): t for t in existing}
        out.write(f"Retell LLM {llm_id}: {len(ours)} custom functions at {base_url}\n")
        for tool in ours:
            name = tool["name"]
            change = changes[name]
            if change == "added":
                out.write(f"  + {name} (new)\n")
            elif change == "changed":
                fields = ", ".join(_changed_fields(current[name], tool))
                out.write(f"  ~ {name} ({fields} changed)\n")
            else:
                out.write(f"  = {name} (unchanged)\n")
        others = [str(t.get("name")) for t in existing if t.get("name") not in changes]
        if others:
            out.write(f"  kept as they are: {', '.join(others)}\n")
        todo = [n for n, c in changes.items() if c != "unchanged"]
        if not todo:
            out.write("Already up to date; nothing to write.\n")
            return EXIT_OK
        if not apply:
            out.write(f"Dry run: {len(todo)} tools would change. Rerun with --apply to write.\n")
            return EXIT_OK
        await _retell(client, "PATCH", f"/update-retell-llm/{llm_id}", {"general_tools": merged})
        out.write(f"Updated {llm_id}: {len(todo)} tools written.\n")
        return EXIT_OK
    except RetellFailure as failure:
        err.write(failure.message + "\n")
        return failure.exit_code

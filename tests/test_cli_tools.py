"""`python -m service tools`: Retell tool definitions that match the models, and --sync."""

from __future__ import annotations

import io
import json
import typing
from typing import Any

import httpx
import pytest
import respx
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from service.__main__ import main
from service.cli_tools import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SERVER_ERROR,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    STYLES,
    llm_schema,
    merge_tools,
    retell_client,
    sync_tools,
    tool_definitions,
)
from service.functions import FUNCTIONS

BASE = "https://clinic.example.com"
RETELL = "https://api.retell.test"
LLM_ID = "llm_0123456789abcdef"

# Pairs of (arguments, whether the model accepts them), per function: both sides must agree.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "check_availability": [
        {"date": "2026-12-02"},
        {"date": "2026-12-02", "days": 7, "time_preference": "morning", "max_slots": 5},
        {"date": "2026-12-02", "time_preference": "night"},
        {"date": "2026-13-02"},
        {"date": "2026-12-02", "days": 0},
        {"date": "2026-12-02", "days": 32},
        {"date": "2026-12-02", "max_slots": 101},
        {"date": "2026-12-02", "duration_minutes": 4},
        {"date": "2026-12-02", "duration_minutes": 480},
        {"date": "2026-12-02", "staff_member_id": "7f0c6bde-4b1f-4a47-9d7e-6a3f7e2b1c55"},
        {"date": "2026-12-02", "staff_member_id": "not-a-uuid"},
        {"days": 2},
        {},
    ],
    "book_appointment": [
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "09:00"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "9:30"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "23:59"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "24:00"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "09:60"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "9am"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02"},
        {"date": "2026-12-02", "time": "09:00"},
        {"patient_name": "Maria Gonzalez", "date": "2026-12-02", "time": "09:00", "notes": "x"},
        {"patient_name": "M", "date": "2026-12-02", "time": "09:00", "patient_email": "m@x.org"},
        {"patient_name": "M", "date": "2026-12-02", "time": "09:00", "patient_email": "m@x"},
        {"patient_name": "M", "date": "2026-12-02", "time": "09:00", "staff_role": "x" * 501},
        {"patient_name": "M", "date": "2026-12-02", "time": "09:00", "staff_role": "x" * 500},
    ],
    "find_appointments": [{}, {"patient_name": "Maria", "patient_phone": "+16175550187"}],
    "cancel_appointment": [
        {"date": "2026-12-02", "time": "09:00"},
        {"appointment_id": "7f0c6bde-4b1f-4a47-9d7e-6a3f7e2b1c55"},
    ],
    "reschedule_appointment": [
        {"date": "2026-12-02", "new_date": "2026-12-03", "new_time": "10:00"},
        {"date": "2026-12-02", "new_date": "2026-12-03"},
        {"date": "2026-12-02", "new_date": "2026-12-03", "new_time": "25:00"},
    ],
    "leave_voicemail": [
        {"message": "Please call me back."},
        {"message": "Please call me back.", "priority": "urgent", "message_type": "voicemail"},
        {"message": "Please call me back.", "priority": "critical"},
        {"message": "Please call me back.", "message_type": "fax"},
        {"caller_name": "Maria"},
    ],
    "forward_call": [{}, {"reason": "billing question", "caller_name": "Maria"}],
}


def _model_accepts(function: str, args: dict[str, Any]) -> bool:
    try:
        FUNCTIONS[function].args.model_validate(args)
    except ValidationError:
        return False
    return True


def _enum_values(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = _enum_values(arg)
        if found is not None:
            return found
    return None


def test_every_function_has_a_tool_with_its_url_and_required_fields() -> None:
    """Each registered function gets one custom tool whose required list is the model's."""
    tools = {tool["name"]: tool for tool in tool_definitions(BASE)}
    assert set(tools) == set(FUNCTIONS)
    for name, function in FUNCTIONS.items():
        tool = tools[name]
        assert tool["type"] == "custom"
        assert tool["url"] == f"{BASE}/retell/functions/{name}"
        assert tool["description"]
        assert 1000 <= tool["timeout_ms"] <= 600_000
        model_required = {n for n, f in function.args.model_fields.items() if f.is_required()}
        assert set(tool["parameters"].get("required", [])) == model_required
        assert set(tool["parameters"]["properties"]) <= set(function.args.model_fields)
        Draft202012Validator.check_schema(tool["parameters"])


def test_schema_is_clean_for_an_llm() -> None:
    """No titles, refs, nulls or pydantic `time` format reach the LLM; dates keep format date."""
    for function in FUNCTIONS.values():
        text = json.dumps(llm_schema(function.args))
        for noise in ('"title"', "$ref", "$defs", '"null"', '"format": "time"'):
            assert noise not in text, (function.name, noise)
    booking = llm_schema(FUNCTIONS["book_appointment"].args)["properties"]
    assert booking["date"] == {
        "type": "string",
        "description": "YYYY-MM-DD in the clinic's zone.",
        "format": "date",
    }
    assert booking["time"]["pattern"] == r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"
    assert booking["duration_minutes"]["minimum"] == 5
    assert booking["duration_minutes"]["maximum"] == 480


def test_enums_match_the_models_literals() -> None:
    """Every enum in a schema lists exactly the values the model's Literal allows."""
    checked = 0
    for function in FUNCTIONS.values():
        properties = llm_schema(function.args)["properties"]
        for name, field in function.args.model_fields.items():
            values = _enum_values(field.annotation)
            if values is None:
                assert "enum" not in properties[name]
                continue
            assert properties[name]["enum"] == values
            checked += 1
    assert checked >= 3  # time_preference, message_type and priority are really checked


@pytest.mark.parametrize("function", sorted(EXAMPLES))
def test_schema_and_model_agree_on_examples(function: str) -> None:
    """An example the JSON Schema accepts is one the model accepts, and the other way round."""
    validator = Draft202012Validator(
        llm_schema(FUNCTIONS[function].args), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for args in EXAMPLES[function]:
        assert validator.is_valid(args) == _model_accepts(function, args), args


def test_forward_call_feeds_transfer_call() -> None:
    """forward_call copies forward_number into a dynamic variable for transfer_call."""
    tools = {tool["name"]: tool for tool in tool_definitions(BASE)}
    assert tools["forward_call"]["response_variables"] == {"forward_number": "forward_number"}
    assert "response_variables" not in tools["check_availability"]
    assert tools["book_appointment"]["speak_during_execution"] is True
    assert tools["book_appointment"]["execution_message_description"]


def test_tools_command_prints_the_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    """`tools --base-url` prints a JSON list of every tool under that URL."""
    assert main(["tools", "--base-url", BASE + "/"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in printed] == list(FUNCTIONS)
    assert printed[0]["url"] == f"{BASE}/retell/functions/{printed[0]['name']}"


# ---- sync -------------------------------------------------------------------------------------

OTHER_TOOLS: list[dict[str, Any]] = [
    {"type": "end_call", "name": "end_call", "description": "Hang up when done."},
    {
        "type": "transfer_call",
        "name": "transfer_to_office",
        "transfer_destination": {"type": "predefined", "number": "{{forward_number}}"},
    },
]


def _llm(general_tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"llm_id": LLM_ID, "general_prompt": "You are Ava.", "general_tools": general_tools}


async def _sync(apply: bool) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    async with retell_client(RETELL, "key_abc", 5.0) as client:
        code = await sync_tools(client, LLM_ID, BASE, apply=apply, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_dry_run_shows_the_difference_and_writes_nothing(
    no_outbound_http: respx.MockRouter,
) -> None:
    """A dry run reads the LLM, lists new and changed tools, and sends no PATCH."""
    stale = {**tool_definitions(BASE)[0], "url": "https://old.example.com/x"}
    get = no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(
        json=_llm([*OTHER_TOOLS, stale])
    )
    patch = no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(json={})
    code, out, _ = await _sync(apply=False)
    assert code == EXIT_OK
    assert get.call_count == 1
    assert get.calls[0].request.headers["authorization"] == "Bearer key_abc"
    assert patch.call_count == 0
    assert "~ check_availability (url changed)" in out
    assert "+ book_appointment (new)" in out
    assert "kept as they are: end_call, transfer_to_office" in out
    assert "--apply" in out


async def test_apply_writes_merged_tools_and_keeps_the_others(
    no_outbound_http: respx.MockRouter,
) -> None:
    """--apply PATCHes general_tools with ours replaced in place and the LLM's own left as is."""
    stale = {**tool_definitions(BASE)[0], "url": "https://old.example.com/x"}
    no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(
        json=_llm([OTHER_TOOLS[0], stale, OTHER_TOOLS[1]])
    )
    patch = no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(json={})
    code, out, _ = await _sync(apply=True)
    assert code == EXIT_OK
    assert patch.call_count == 1
    sent = json.loads(patch.calls[0].request.content)
    assert set(sent) == {"general_tools"}
    tools = sent["general_tools"]
    assert tools[0] == OTHER_TOOLS[0]
    assert tools[1] == tool_definitions(BASE)[0]
    assert tools[2] == OTHER_TOOLS[1]
    assert [t["name"] for t in tools[3:]] == list(FUNCTIONS)[1:]
    assert "Updated" in out


async def test_up_to_date_llm_is_not_written(no_outbound_http: respx.MockRouter) -> None:
    """When Retell already has our tools (with its own defaults added), --apply writes nothing."""
    echoed = [{**tool, "args_at_root": False} for tool in tool_definitions(BASE)]
    no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(json=_llm(echoed))
    patch = no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(json={})
    code, out, _ = await _sync(apply=True)
    assert code == EXIT_OK
    assert patch.call_count == 0
    assert "Already up to date" in out


async def test_llm_without_tools_gets_ours(no_outbound_http: respx.MockRouter) -> None:
    """An LLM whose general_tools is null gets every one of our tools."""
    no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(json=_llm(None))
    patch = no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(json={})
    code, _, _ = await _sync(apply=True)
    assert code == EXIT_OK
    sent = json.loads(patch.calls[0].request.content)["general_tools"]
    assert sent == tool_definitions(BASE)


@pytest.mark.parametrize(
    ("status", "body", "exit_code", "words"),
    [
        (401, {"message": "Invalid API key"}, EXIT_AUTH, "refused the API key (HTTP 401)"),
        (403, {}, EXIT_AUTH, "check RETELL_API_KEY"),
        (404, {"message": "LLM not found"}, EXIT_REJECTED, "(HTTP 404): LLM not found"),
        (422, {"error_message": "bad tool"}, EXIT_REJECTED, "(HTTP 422): bad tool"),
        (500, {"message": "oops"}, EXIT_SERVER_ERROR, "(HTTP 500); try again later"),
        (503, None, EXIT_SERVER_ERROR, "(HTTP 503)"),
    ],
)
async def test_retell_errors_give_one_line_and_exit_codes(
    no_outbound_http: respx.MockRouter,
    status: int,
    body: dict[str, Any] | None,
    exit_code: int,
    words: str,
) -> None:
    """Each kind of Retell failure is one clear stderr line and its own exit code; no write."""
    no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(status, json=body)
    patch = no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(json={})
    code, _, err = await _sync(apply=True)
    assert code == exit_code
    assert words in err
    assert err.count("\n") == 1
    assert "key_abc" not in err
    assert patch.call_count == 0


async def test_failed_write_is_reported(no_outbound_http: respx.MockRouter) -> None:
    """A PATCH that Retell rejects is reported with the rejection's reason."""
    no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(json=_llm([]))
    no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(
        400, json={"message": "general_tools[3].url must be https"}
    )
    code, _, err = await _sync(apply=True)
    assert code == EXIT_REJECTED
    assert "PATCH /update-retell-llm/" in err
    assert "must be https" in err


async def test_timeout_and_unreachable(no_outbound_http: respx.MockRouter) -> None:
    """A timeout and a refused connection each get their own exit code and sentence."""
    route = no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}")
    route.side_effect = httpx.ReadTimeout("slow")
    code, _, err = await _sync(apply=True)
    assert code == EXIT_TIMEOUT
    assert "did not answer" in err
    route.side_effect = httpx.ConnectError("refused")
    code, _, err = await _sync(apply=True)
    assert code == EXIT_UNREACHABLE
    assert "could not be reached" in err


def test_merge_replaces_only_our_names() -> None:
    """merge_tools keeps foreign tools in their places and reports each of ours."""
    ours = tool_definitions(BASE)
    merged, changes = merge_tools([OTHER_TOOLS[0], ours[1]], ours)
    assert merged[0] == OTHER_TOOLS[0]
    assert merged[1] == ours[1]
    assert changes["book_appointment"] == "unchanged"
    assert changes["check_availability"] == "added"
    assert len(merged) == 1 + len(ours)


def test_sync_command_needs_key_and_ids(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tools --sync` without --llm-id, RETELL_API_KEY or a public URL is a usage error (2)."""
    monkeypatch.delenv("RETELL_API_KEY", raising=False)
    monkeypatch.chdir("/")  # no .env file to pick a key up from
    assert main(["tools", "--sync", "--base-url", BASE]) == 2
    assert "--llm-id" in capsys.readouterr().err
    assert main(["tools", "--sync", "--llm-id", LLM_ID, "--base-url", BASE]) == 2
    assert "RETELL_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("RETELL_API_KEY", "key_env")
    local = "http://127.0.0.1:8080"
    assert main(["tools", "--sync", "--llm-id", LLM_ID, "--base-url", local]) == 2
    assert "Retell needs the service's public URL" in capsys.readouterr().err


def test_sync_command_runs_against_retell(
    monkeypatch: pytest.MonkeyPatch,
    no_outbound_http: respx.MockRouter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tools --sync --apply` reads the key and the API base URL from the environment."""
    monkeypatch.setenv("RETELL_API_KEY", "key_env")
    monkeypatch.setenv("RETELL_API_BASE_URL", RETELL)
    monkeypatch.chdir("/")
    no_outbound_http.get(f"{RETELL}/get-retell-llm/{LLM_ID}").respond(json=_llm([]))
    patch = no_outbound_http.patch(f"{RETELL}/update-retell-llm/{LLM_ID}").respond(json={})
    argv = ["tools", "--sync", "--llm-id", LLM_ID, "--base-url", BASE, "--apply"]
    assert main(argv) == 0
    assert patch.calls[0].request.headers["authorization"] == "Bearer key_env"
    assert "Updated" in capsys.readouterr().out


def test_every_style_belongs_to_a_function() -> None:
    """Tool styles are keyed by real function names, so a rename can't silently drop one."""
    assert set(STYLES) == set(FUNCTIONS)

"""`python -m service call`: signed requests to the service, and a whole simulated call."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest
import respx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.__main__ import main
from service.cli_call import CallIdentity, call_function, next_weekday, parse_assignments, simulate
from service.cli_tools import EXIT_OK, EXIT_REFUSED, EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE
from service.errors import json_response
from service.retell import signature_is_valid, signed_body
from tests.conftest import API_KEY
from tests.factories import Clinic

CALLER = "+16175550187"


class FakeWebhooks:
    """Stand-ins for /retell/inbound and /retell/webhook where the app has none yet.

    They check the signature as the real endpoints do (CONTRACT.md section 5 answers).
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def inbound(self, request: Request) -> Response:
        body = orjson.loads(await signed_body(request, 1 << 20))
        self.events.append(body)
        variables = {"timezone": "America/New_York", "greeting": "Thanks for calling Brightside."}
        return json_response({"call_inbound": {"dynamic_variables": variables}})

    async def webhook(self, request: Request) -> Response:
        self.events.append(orjson.loads(await signed_body(request, 1 << 24)))
        return Response(status_code=204)

    def install(self, app: Starlette) -> None:
        paths = {getattr(route, "path", None) for route in app.router.routes}
        if "/retell/inbound" not in paths:
            app.router.routes.append(Route("/retell/inbound", self.inbound, methods=["POST"]))
        if "/retell/webhook" not in paths:
            app.router.routes.append(Route("/retell/webhook", self.webhook, methods=["POST"]))


@pytest.fixture
def webhooks(app: Starlette) -> FakeWebhooks:
    fake = FakeWebhooks()
    fake.install(app)
    return fake


@pytest.fixture
async def service(app: Starlette, webhooks: FakeWebhooks) -> AsyncIterator[httpx.AsyncClient]:
    """A client reaching the in-process app, as the CLI's core takes it."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
        yield c


async def _run_call(
    service: httpx.AsyncClient,
    clinic: Clinic,
    function: str,
    args: dict[str, Any],
    key: str = API_KEY,
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    identity = CallIdentity(agent_id=clinic.agent_id, call_id="call_cli_test", from_number=CALLER)
    code = await call_function(service, key, identity, function, args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _printed_json(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text[text.index("\n{") :])
    return value


async def test_call_prints_what_the_agent_says_and_the_json(
    service: httpx.AsyncClient, clinic: Clinic
) -> None:
    """A signed check_availability is accepted and its spoken message and JSON are printed."""
    day = next_weekday(date.today())
    code, out, err = await _run_call(
        service, clinic, "check_availability", {"date": day.isoformat(), "max_slots": "2"}
    )
    assert code == EXIT_OK, err
    assert "Agent says: I have " in out
    result = _printed_json(out)
    assert result["ok"] is True
    assert len(result["slots"]) == 2


async def test_call_books_through_the_real_function(
    service: httpx.AsyncClient, clinic: Clinic, db: asyncpg.Connection
) -> None:
    """A booking sent by `call` is stored under the caller's number."""
    day = next_weekday(date.today())
    args = {"patient_name": "Maria Gonzalez", "date": day.isoformat(), "time": "14:00"}
    code, out, _ = await _run_call(service, clinic, "book_appointment", args)
    assert code == EXIT_OK
    assert "You're booked" in out
    row = await db.fetchrow(
        "select patient_name, patient_phone, appointment_date from appointments"
    )
    assert row is not None
    assert (row["patient_name"], row["patient_phone"]) == ("Maria Gonzalez", CALLER)
    assert row["appointment_date"] == day


async def test_refusal_exits_one(service: httpx.AsyncClient, clinic: Clinic) -> None:
    """An ok:false answer is printed and the command exits 1."""
    code, out, _ = await _run_call(service, clinic, "check_availability", {"date": "Tuesday"})
    assert code == EXIT_REFUSED
    assert "calendar date" in out


async def test_wrong_key_is_reported(service: httpx.AsyncClient, clinic: Clinic) -> None:
    """Signing with another key gets the service's 401, reported on one line."""
    code, _, err = await _run_call(
        service, clinic, "check_availability", {"date": "2027-01-06"}, key="not-the-key"
    )
    assert code == EXIT_REJECTED
    assert err == (
        "The service answered HTTP 401: invalid_signature: "
        "The X-Retell-Signature header is not valid.\n"
    )


async def test_simulate_plays_a_whole_call(
    service: httpx.AsyncClient,
    clinic: Clinic,
    db: asyncpg.Connection,
    webhooks: FakeWebhooks,
) -> None:
    """simulate books the first slot offered, sends the call's events, and shows the booking."""
    out, err = io.StringIO(), io.StringIO()
    identity = CallIdentity(agent_id=clinic.agent_id, call_id="call_sim_1", from_number=CALLER)
    code = await simulate(service, API_KEY, identity, patient_name="Sam Sim", out=out, err=err)
    printed = out.getvalue()
    assert code == EXIT_OK, err.getvalue() + printed
    row = await db.fetchrow(
        "select a.patient_name, a.appointment_date, c.retell_call_id "
        "from appointments a join customer_call_logs c on c.id = a.call_log_id"
    )
    assert row is not None
    assert row["patient_name"] == "Sam Sim"
    assert row["appointment_date"] == next_weekday(datetime.now(ZoneInfo(clinic.timezone)).date())
    assert row["retell_call_id"] == "call_sim_1"
    for step in ("/retell/inbound", "check_availability", "book_appointment", "call_analyzed"):
        assert step in printed
    assert "You have one upcoming appointment" in printed
    if webhooks.events:  # the stand-ins were used: every event arrived signed and in order
        assert [e["event"] for e in webhooks.events] == [
            "call_inbound",
            "call_started",
            "call_ended",
            "call_analyzed",
        ]
        analyzed = webhooks.events[-1]["call"]
        assert analyzed["call_id"] == "call_sim_1"
        assert analyzed["call_analysis"]["call_successful"] is True


async def test_simulate_reports_missing_webhook(
    app: Starlette, clinic: Clinic, db: asyncpg.Connection
) -> None:
    """When the webhook answers something other than 204, simulate says so and exits non-zero."""

    async def broken(request: Request) -> Response:
        return json_response({"error": "boom", "message": "Not stored."}, 503)

    app.router.routes.insert(0, Route("/retell/webhook", broken, methods=["POST"]))
    FakeWebhooks().install(app)
    out, err = io.StringIO(), io.StringIO()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
        identity = CallIdentity(agent_id=clinic.agent_id, from_number=CALLER)
        code = await simulate(c, API_KEY, identity, out=out, err=err)
    assert code == EXIT_REJECTED
    assert "call_ended answered HTTP 503" in err.getvalue()


def test_assignments_are_strings_or_json() -> None:
    """key=value gives a string, key:=json a JSON value; anything else is a usage error."""
    assert parse_assignments(["date=2026-12-02", "days:=3", "urgent:=true", "note=a=b"]) == {
        "date": "2026-12-02",
        "days": 3,
        "urgent": True,
        "note": "a=b",
    }
    with pytest.raises(Exception, match="key=value"):
        parse_assignments(["date"])
    with pytest.raises(Exception, match="not JSON"):
        parse_assignments(["days:=three"])


def test_next_weekday_skips_the_weekend() -> None:
    """Friday's next weekday is Monday; Monday's is Tuesday."""
    assert next_weekday(date(2026, 11, 27)) == date(2026, 11, 30)
    assert next_weekday(date(2026, 11, 30)) == date(2026, 12, 1)


def test_call_command_signs_the_exact_bytes(
    no_outbound_http: respx.MockRouter,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`call` posts the envelope to --base-url with a signature valid for its exact bytes."""
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    route = no_outbound_http.post("http://127.0.0.1:18150/retell/functions/leave_voicemail")
    route.respond(json={"ok": True, "saved": True, "message": "I've passed your message on."})
    argv = [
        "call",
        "leave_voicemail",
        "--agent-id",
        "agent_x",
        "--base-url",
        "http://127.0.0.1:18150",
        "--key-file",
        str(key_file),
        "--call-id",
        "call_42",
        "message=Café hours, s'il vous plaît",
        "priority=high",
    ]
    assert main(argv) == 0
    request = route.calls[0].request
    assert signature_is_valid(request.content, request.headers["x-retell-signature"], "file-key")
    sent = orjson.loads(request.content)
    assert sent["name"] == "leave_voicemail"
    assert sent["call"]["agent_id"] == "agent_x"
    assert sent["call"]["call_id"] == "call_42"
    assert sent["args"] == {"message": "Café hours, s'il vous plaît", "priority": "high"}
    assert "Agent says: I've passed your message on." in capsys.readouterr().out


def test_call_command_reports_a_service_that_is_down(
    no_outbound_http: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A service that refuses the connection is one line on stderr and exit 7; no key is exit 2."""
    monkeypatch.chdir("/")
    monkeypatch.delenv("RETELL_API_KEY", raising=False)
    argv = ["call", "forward_call", "--agent-id", "agent_x", "--base-url", "http://127.0.0.1:18151"]
    assert main(argv) == EXIT_USAGE
    assert "RETELL_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("RETELL_API_KEY", "env-key")
    no_outbound_http.post("http://127.0.0.1:18151/retell/functions/forward_call").mock(
        side_effect=httpx.ConnectError("refused")
    )
    assert main(argv) == EXIT_UNREACHABLE
    assert "can't be reached" in capsys.readouterr().err

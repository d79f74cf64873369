"""The log of a real run at INFO holds no API key, no full phone number, no transcript text."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import structlog

from service import logs
from service.logs import configure_logging, mask_phone
from tests.conftest import API_KEY, load_fixture, signed_headers
from tests.factories import Clinic
from tests.service_process import ServiceProcess, local_http
from tests.test_faults import next_weekday

pytestmark = pytest.mark.usefixtures(local_http.__name__)

PORT = 18340
CALLER = "+16175550187"
OTHER_PHONE = "+16175550163"
TRANSCRIPT = "User: my gum has been bleeding since Tuesday and the pain is unbearable"
VOICEMAIL = "Please call me back about the biopsy results from last week"


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        PORT, tmp_path / "serve.log", DATABASE_URL=database_url, LOG_LEVEL="INFO"
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


def call(clinic: Clinic, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "call": {
            "call_id": "call_logs_1",
            "agent_id": clinic.agent_id,
            "direction": "inbound",
            "from_number": CALLER,
            "to_number": "+16175550100",
        },
        "args": args,
    }


@pytest.mark.slow
async def test_info_log_masks_secrets_phones_and_transcripts(
    service: ServiceProcess, db: asyncpg.Connection, clinic: Clinic
) -> None:
    """After calls, webhooks and refusals, the INFO log has no key, full number or transcript."""
    await service.wait_ready()
    day = next_weekday().isoformat()
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/retell/functions/check_availability", call(clinic, "check_availability", {"date": day})),
        (
            "/retell/functions/book_appointment",
            call(
                clinic,
                "book_appointment",
                {"patient_name": "Maria Gonzalez", "date": day, "time": "10:00"},
            ),
        ),
        (
            "/retell/functions/book_appointment",
            call(clinic, "book_appointment", {"patient_name": "X", "patient_phone": "12"}),
        ),
        ("/retell/functions/find_appointments", call(clinic, "find_appointments", {})),
        (
            "/retell/functions/leave_voicemail",
            call(clinic, "leave_voicemail", {"message": VOICEMAIL, "caller_phone": OTHER_PHONE}),
        ),
        ("/retell/functions/forward_call", call(clinic, "forward_call", {"reason": "billing"})),
    ]
    ended = load_fixture("webhook_call_ended.json")
    ended["call"]["transcript"] = TRANSCRIPT
    ended["call"]["transcript_object"] = [{"role": "user", "content": TRANSCRIPT}]
    inbound = load_fixture("webhook_call_inbound.json")
    unknown = load_fixture("webhook_call_ended.json")
    unknown["call"]["agent_id"] = "agent_unknown_0000"
    unknown["call"]["transcript"] = TRANSCRIPT
    bodies += [
        ("/retell/webhook", load_fixture("webhook_call_started.json")),
        ("/retell/webhook", ended),
        ("/retell/webhook", load_fixture("webhook_call_analyzed.json")),
        ("/retell/webhook", unknown),
        ("/retell/inbound", inbound),
    ]
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        for path, body in bodies:
            raw = orjson.dumps(body)
            response = await client.post(path, content=raw, headers=signed_headers(raw))
            assert response.status_code < 500, response.text
        # Refusals: a wrong signature, and a body the database could not store.
        raw = orjson.dumps(ended)
        wrong = signed_headers(raw, key="not-the-key")
        assert (await client.post("/retell/webhook", content=raw, headers=wrong)).status_code == 401
        nul = orjson.dumps(call(clinic, "leave_voicemail", {"message": TRANSCRIPT + "\u0000"}))
        assert (
            await client.post(
                "/retell/functions/leave_voicemail", content=nul, headers=signed_headers(nul)
            )
        ).status_code == 400
    service.signal(signal.SIGTERM)
    await service.wait_exit(within=10)
    await asyncio.sleep(0)

    output = service.output()
    # The run was logged, one line per request.
    assert output.count('"event":"request"') >= len(bodies) + 2
    assert API_KEY not in output
    for number in (CALLER, OTHER_PHONE, "+16175550100", "+16175550142"):
        assert number not in output
        assert number[2:] not in output  # nor its national digits
    assert mask_phone(CALLER) in output or "call_logs_1" in output
    for text in (TRANSCRIPT, VOICEMAIL, "bleeding", "biopsy"):
        assert text not in output
    assert "Traceback" not in output
    assert await db.fetchval("select count(*) from customer_call_logs") >= 1


def test_redaction_masks_keys_phones_transcripts_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Events, library messages and tracebacks come out with key, numbers and transcripts masked."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        logs.hide(API_KEY)
        log = structlog.get_logger("tests.redaction")
        log.info(
            "call_received",
            from_number=CALLER,
            transcript=TRANSCRIPT,
            api_key=API_KEY,
            note=f"caller {CALLER} asked",
        )
        try:
            raise ValueError(f"bad value {OTHER_PHONE} signed with {API_KEY}")
        except ValueError:
            log.exception("failed")
        logging.getLogger("asyncpg").warning("connect for %s with %s failed", CALLER, API_KEY)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3
    assert "ValueError" in out
    assert mask_phone(CALLER) in out
    assert mask_phone(OTHER_PHONE) in out
    assert f"[{len(TRANSCRIPT)} chars]" in out
    assert API_KEY not in out
    for number in (CALLER, OTHER_PHONE):
        assert number not in out
    assert TRANSCRIPT not in out

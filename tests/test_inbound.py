"""POST /retell/inbound: the clinic's dynamic variables before the agent answers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import httpx
import orjson
from starlette.applications import Starlette

from service.webhooks import INBOUND_VARIABLES
from tests.conftest import Clock, load_fixture, post_signed, signed_headers
from tests.factories import Clinic, add_appointment, create_clinic

CALLER = "+16175550187"
# Wednesday, November 25, 2026, 10:00 in Boston.
WEDNESDAY_MORNING = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def inbound_body(agent_id: str | None, from_number: str = CALLER) -> dict[str, Any]:
    body = copy.deepcopy(load_fixture("webhook_call_inbound.json"))
    body["call_inbound"]["from_number"] = from_number
    if agent_id is None:
        del body["call_inbound"]["agent_id"]
    else:
        body["call_inbound"]["agent_id"] = agent_id
    return body


async def ask(client: httpx.AsyncClient, clock: Clock, raw: Any) -> httpx.Response:
    """POST to /retell/inbound signed at the app's (settable) now."""
    stamp = int(clock().timestamp() * 1000)
    return await post_signed(client, "/retell/inbound", raw, timestamp_ms=stamp)


async def variables(
    client: httpx.AsyncClient, clock: Clock, agent_id: str | None
) -> dict[str, str]:
    response = await ask(client, clock, inbound_body(agent_id))
    assert response.status_code == 200, response.text
    answer = response.json()["call_inbound"]
    assert set(answer) == {"dynamic_variables"}
    found: dict[str, str] = answer["dynamic_variables"]
    return found


async def add_script(
    db: asyncpg.Connection,
    clinic: Clinic,
    script_type: str,
    content: str,
    conditions: dict[str, Any] | None = None,
    *,
    default: bool = False,
    active: bool = True,
) -> None:
    await db.execute(
        """
        insert into call_scripts (user_id, agent_configuration_id, script_name, script_type,
          script_content, conditions, is_default, is_active)
        values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
        """,
        clinic.user_id,
        clinic.configuration_id,
        content[:40],
        script_type,
        content,
        conditions,
        default,
        active,
    )


async def test_every_variable_is_a_string_and_present(
    client: httpx.AsyncClient, clinic: Clinic, clock: Clock
) -> None:
    """An open clinic, no scripts and an unknown caller: all variables, all strings."""
    clock.now = WEDNESDAY_MORNING
    found = await variables(client, clock, clinic.agent_id)
    assert set(found) >= set(INBOUND_VARIABLES)
    assert all(isinstance(v, str) for v in found.values())
    assert found == {
        "business_name": "Brightside Dental",
        "business_phone": "+16175550100",
        "business_address": "120 Boylston Street, Boston, MA",
        "timezone": "America/New_York",
        "is_open_now": "true",
        "today_hours": "8:00 AM to 5:00 PM",
        "greeting": "Thank you for calling Brightside Dental.",
        "call_script": "",
        "forward_enabled": "true",
        "voicemail_enabled": "true",
        "voicemail_greeting": "",
        "staff_names": "Dr. Ada Lee, Dr. Omar Haddad and Sam Park",
        "caller_name": "",
        "next_appointment": "",
    }


async def test_open_and_hours_follow_the_clinic_zone(
    client: httpx.AsyncClient, clinic: Clinic, clock: Clock
) -> None:
    """At 23:00 UTC on a Wednesday it is 6 PM in Boston: closed, though UTC says Wednesday."""
    clock.now = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    found = await variables(client, clock, clinic.agent_id)
    assert found["is_open_now"] == "false"
    assert found["today_hours"] == "8:00 AM to 5:00 PM"
    # 03:00 UTC on Thursday is still Wednesday evening in Boston.
    clock.now = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert (await variables(client, clock, clinic.agent_id))["today_hours"] == "8:00 AM to 5:00 PM"


async def test_weekend_is_closed(client: httpx.AsyncClient, clinic: Clinic, clock: Clock) -> None:
    """On a Saturday with no hours, today_hours is 'closed' and is_open_now 'false'."""
    clock.now = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    found = await variables(client, clock, clinic.agent_id)
    assert found["is_open_now"] == "false"
    assert found["today_hours"] == "closed"


async def test_several_intervals_are_joined(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock
) -> None:
    """A day with a lunch break is spoken as two ranges; during the break the clinic is closed."""
    hours = {
        "wednesday": [{"open": "13:00", "close": "17:30"}, {"open": "08:00", "close": "12:00"}]
    }
    clinic = await create_clinic(db, business_hours=hours, with_staff=False)
    clock.now = datetime(2026, 11, 25, 17, 30, tzinfo=UTC)  # 12:30 PM in Boston
    found = await variables(client, clock, clinic.agent_id)
    assert found["today_hours"] == "8:00 AM to 12:00 PM and 1:00 PM to 5:30 PM"
    assert found["is_open_now"] == "false"
    assert found["staff_names"] == ""


async def test_scripts_are_chosen_by_conditions(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, clock: Clock
) -> None:
    """The most specific matching script wins, then the default; a wrapping evening window
    matches after midnight; the open flag follows business hours."""
    await add_script(db, clinic, "greeting", "Hello from the default greeting.", default=True)
    await add_script(db, clinic, "greeting", "We're closed right now.", {"open": False})
    await add_script(
        db,
        clinic,
        "greeting",
        "Good Wednesday morning!",
        {"weekdays": ["wednesday"], "before": "12:00", "open": True},
    )
    await add_script(db, clinic, "information", "General script.", default=True)
    await add_script(db, clinic, "information", "Unused general script.")
    await add_script(
        db, clinic, "after_hours", "Night script.", {"after": "18:00", "before": "07:00"}
    )
    await add_script(db, clinic, "appointment", "Inactive.", {"open": True}, active=False)

    clock.now = WEDNESDAY_MORNING
    found = await variables(client, clock, clinic.agent_id)
    assert found["greeting"] == "Good Wednesday morning!"
    assert found["call_script"] == "General script."

    clock.now = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # Wednesday 3 PM: open, afternoon
    found = await variables(client, clock, clinic.agent_id)
    assert found["greeting"] == "Hello from the default greeting."
    assert found["call_script"] == "General script."

    clock.now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)  # Thursday 2 AM: closed, night
    found = await variables(client, clock, clinic.agent_id)
    assert found["greeting"] == "We're closed right now."
    assert found["call_script"] == "Night script."


async def test_without_scripts_the_configuration_texts_apply(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock
) -> None:
    """With no matching script and no default, greeting_message and call_script are used."""
    clinic = await create_clinic(
        db, call_script="Ask how we can help.", voicemail_greeting="Leave a message."
    )
    await add_script(db, clinic, "greeting", "Saturday hello.", {"weekdays": ["saturday"]})
    clock.now = WEDNESDAY_MORNING
    found = await variables(client, clock, clinic.agent_id)
    assert found["greeting"] == "Thank you for calling Brightside Dental."
    assert found["call_script"] == "Ask how we can help."
    assert found["voicemail_greeting"] == "Leave a message."


async def test_known_caller_is_greeted_with_next_appointment(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, clock: Clock
) -> None:
    """A caller with upcoming appointments gets their name and the soonest non-cancelled one."""
    clock.now = WEDNESDAY_MORNING
    lee = clinic.staff["Dr. Ada Lee"]
    await add_appointment(db, lee, date(2026, 11, 25), time(9))  # earlier today: past
    await add_appointment(db, lee, date(2026, 12, 1), time(10), status="cancelled")
    await add_appointment(db, lee, date(2026, 12, 2), time(9))
    await add_appointment(db, lee, date(2026, 12, 9), time(9))
    await add_appointment(db, lee, date(2026, 11, 30), time(9), name="Other", phone="+16175550111")
    found = await variables(client, clock, clinic.agent_id)
    assert found["caller_name"] == "Maria Gonzalez"
    assert found["next_appointment"] == "Wednesday, December 2 at 9:00 AM with Dr. Ada Lee"


async def test_unknown_agent_gets_an_empty_answer(
    client: httpx.AsyncClient, clinic: Clinic, clock: Clock
) -> None:
    """An agent no clinic uses, or no agent_id at all, gets {"call_inbound": {}}."""
    for agent_id in ("agent_nobody", None):
        response = await ask(client, clock, inbound_body(agent_id))
        assert response.status_code == 200
        assert response.json() == {"call_inbound": {}}


async def test_inactive_configuration_is_unknown(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, clock: Clock
) -> None:
    """A deactivated clinic's agent gets Retell's defaults."""
    await db.execute("update agent_configurations set is_active = false")
    response = await ask(client, clock, inbound_body(clinic.agent_id))
    assert response.json() == {"call_inbound": {}}


async def test_bad_signature_is_refused(client: httpx.AsyncClient, clinic: Clinic) -> None:
    """An inbound request signed with another key is 401."""
    raw = orjson.dumps(inbound_body(clinic.agent_id))
    response = await client.post(
        "/retell/inbound", content=raw, headers=signed_headers(raw, key="wrong-key")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


async def test_malformed_inbound_is_400(
    client: httpx.AsyncClient, clinic: Clinic, clock: Clock
) -> None:
    """A body that is not JSON, or has no call_inbound object, is 400 with the error shape."""
    for raw in (b"{", orjson.dumps({"event": "call_inbound"})):
        response = await ask(client, clock, raw)
        assert response.status_code == 400
        assert set(response.json()) == {"error", "message"}


async def test_database_failure_falls_back_to_defaults(
    make_app: Callable[..., Starlette], clinic: Clinic
) -> None:
    """When the database can't be reached in time the answer is {"call_inbound": {}}, not 5xx."""
    application = make_app()
    async with application.router.lifespan_context(application):
        await application.state.service.pool.close()
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await post_signed(c, "/retell/inbound", inbound_body(clinic.agent_id))
    assert response.status_code == 200
    assert response.json() == {"call_inbound": {}}


async def test_slow_database_falls_back_within_the_deadline(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, clock: Clock
) -> None:
    """A query stuck behind a lock is abandoned and answered {"call_inbound": {}} (Retell would
    otherwise keep the caller ringing)."""
    async with db.transaction():
        await db.execute("lock table agent_configurations in access exclusive mode")
        response = await ask(client, clock, inbound_body(clinic.agent_id))
    assert response.status_code == 200
    assert response.json() == {"call_inbound": {}}


def real_inbound(name: str, agent_id: str) -> dict[str, Any]:
    """An inbound body as Retell's docs or a production log show it, for this agent."""
    body = copy.deepcopy(load_fixture(f"real/{name}.json"))
    body[body["event"]]["agent_id"] = agent_id
    return body


async def test_an_inbound_sms_gets_the_clinic_variables(
    client: httpx.AsyncClient, clinic: Clinic, clock: Clock
) -> None:
    """chat_inbound (an SMS) is answered like a call, under chat_inbound; unknown agent: {}."""
    clock.now = WEDNESDAY_MORNING
    calls = await variables(client, clock, clinic.agent_id)
    body = real_inbound("inbound_chat__retell-docs-inbound-webhook-current", clinic.agent_id)
    response = await ask(client, clock, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"chat_inbound": {"dynamic_variables": calls}}
    body = real_inbound("inbound_chat__retell-docs-inbound-webhook-current", "agent_nobody")
    response = await ask(client, clock, body)
    assert response.status_code == 200
    assert response.json() == {"chat_inbound": {}}
    response = await ask(client, clock, {"event": "chat_inbound"})
    assert response.status_code == 400


async def test_a_withheld_caller_id_gets_the_clinic_without_a_caller(
    client: httpx.AsyncClient, db: asyncpg.Connection, clinic: Clinic, clock: Clock
) -> None:
    """from_number "anonymous" (a production body): the clinic's variables, no caller's."""
    clock.now = WEDNESDAY_MORNING
    await add_appointment(db, clinic.staff["Dr. Ada Lee"], date(2026, 12, 2), time(9))
    response = await ask(
        client, clock, real_inbound("inbound__askproai-endpoint-status", clinic.agent_id)
    )
    assert response.status_code == 200
    found = response.json()["call_inbound"]["dynamic_variables"]
    assert found["business_name"] == "Brightside Dental"
    assert (found["caller_name"], found["next_appointment"]) == ("", "")


async def test_forwarding_switched_on_without_a_number_is_not_offered(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock
) -> None:
    """forward_enabled with no forward_number yet: the agent hears forward_enabled "false"."""
    clock.now = WEDNESDAY_MORNING
    clinic = await create_clinic(db, forward_enabled=True, forward_number=None)
    found = await variables(client, clock, clinic.agent_id)
    assert found["forward_enabled"] == "false"

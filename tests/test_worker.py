"""The worker delivers the outbox: signed webhooks, retries, leases, failures, reminders."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import respx
import standardwebhooks
from starlette.applications import Starlette

from service.config import Settings
from service.worker import listen_url, retry_delay
from tests.factories import Clinic
from tests.outbox import (
    HOOK_URL,
    add_endpoint,
    deliver_all,
    new_secret,
    outbox_rows,
    store_voicemail,
    worker,
    worker_settings,
)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return worker_settings(settings)


async def test_webhook_verifies_with_an_independent_standard_webhooks_implementation(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """The standardwebhooks package accepts the headers and body the worker sends."""
    secret = new_secret()
    await add_endpoint(db, clinic, secret=secret)
    voicemail_id = await store_voicemail(db, clinic, urgent=True)
    route = no_outbound_http.post(HOOK_URL).respond(204)
    async with worker(fast) as w:
        await deliver_all(w)
    assert route.call_count == 1
    request = route.calls.last.request
    payload = standardwebhooks.Webhook(secret).verify(request.content, dict(request.headers))
    assert payload["type"] == "voicemail.created"
    assert payload["data"]["voicemail_id"] == str(voicemail_id)
    assert payload["data"]["agent_id"] == clinic.agent_id
    assert payload["data"]["caller_phone"] == "+16175550163"
    assert payload["data"]["is_urgent"] is True
    # The words themselves only where the clinic opted in.
    assert "message" not in payload["data"]
    rows = await outbox_rows(db)
    assert request.headers["webhook-id"] == str(rows[0]["id"])
    assert [r["status"] for r in rows] == ["delivered"]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(request.content, dict(request.headers))


async def test_opted_in_endpoint_gets_the_message_text(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """include_details adds the message and email; other endpoints of the clinic don't get it."""
    await add_endpoint(db, clinic, include_details=True)
    await add_endpoint(db, clinic, target="https://other.clinic.example/hook")
    await store_voicemail(db, clinic, caller_email="james@example.com")
    detailed = no_outbound_http.post(HOOK_URL).respond(200)
    plain = no_outbound_http.post("https://other.clinic.example/hook").respond(200)
    async with worker(fast) as w:
        await deliver_all(w)
    detailed_data = orjson.loads(detailed.calls.last.request.content)["data"]
    plain_data = orjson.loads(plain.calls.last.request.content)["data"]
    assert detailed_data["message"].startswith("My crown came off")
    assert detailed_data["caller_email"] == "james@example.com"
    assert "message" not in plain_data
    assert "caller_email" not in plain_data


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500), httpx.ReadTimeout("silent"), httpx.ConnectError("refused")],
    ids=["500", "no answer", "refused"],
)
async def test_failed_attempt_is_retried_with_the_same_id(
    db: asyncpg.Connection,
    clinic: Clinic,
    fast: Settings,
    no_outbound_http: respx.MockRouter,
    failure: httpx.Response | Exception,
) -> None:
    """A receiver answering 500, not answering or refusing, then 200: the same webhook-id and
    body twice, then delivered."""
    await add_endpoint(db, clinic)
    await store_voicemail(db, clinic)
    route = no_outbound_http.post(HOOK_URL).mock(side_effect=[failure, httpx.Response(200)])
    async with worker(fast) as w:
        await deliver_all(w)
    assert route.call_count == 2
    first, second = (call.request for call in route.calls)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.content == second.content
    [row] = await outbox_rows(db)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 2, None)


async def test_notification_that_keeps_failing_is_marked_failed_and_shown(
    db: asyncpg.Connection,
    clinic: Clinic,
    settings: Settings,
    no_outbound_http: respx.MockRouter,
    make_app: Callable[..., Starlette],
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    """After the last attempt: status failed, in notification_failures, /metrics and the log;
    sent again, with its id, once the operator asks."""
    await add_endpoint(db, clinic)
    await store_voicemail(db, clinic)
    route = no_outbound_http.post(HOOK_URL).respond(503)
    async with worker(worker_settings(settings, notifications_max_attempts=3)) as w:
        await deliver_all(w)
    assert route.call_count == 3
    [row] = await outbox_rows(db)
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 3, "HTTP 503")
    failures = await db.fetch("select id, kind, event, attempts from notification_failures")
    assert [(r["id"], r["kind"], r["event"], r["attempts"]) for r in failures] == [
        (row["id"], "webhook", "voicemail.created", 3)
    ]
    lines = [line for line in json_logs() if line["event"].startswith("notification_")]
    assert [line["event"] for line in lines] == [
        "notification_retry",
        "notification_retry",
        "notification_failed",
    ]
    assert lines[-1]["level"] == "error"
    assert lines[-1]["notification_id"] == str(row["id"])
    app = make_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            text = (await c.get("/metrics")).text
    assert 'notifications{status="failed"} 1.0' in text
    assert 'notifications{status="pending"} 0.0' in text
    # The receiver mended, the operator sends the failed ones again (README): same id.
    await db.execute(
        "update notifications set status = 'pending', attempts = 0, due_at = now()"
        " where status = 'failed'"
    )
    route.respond(200)
    async with worker(worker_settings(settings, notifications_max_attempts=3)) as w:
        await deliver_all(w)
    [again] = await outbox_rows(db)
    assert (again["status"], again["attempts"]) == ("delivered", 1)
    assert route.calls.last.request.headers["webhook-id"] == str(row["id"])


def test_backoff_doubles_with_jitter_up_to_the_cap(settings: Settings) -> None:
    """Delays are base x 2^(n-1), 50-100% of it, never past the cap."""
    s = settings.model_copy(
        update={"notifications_retry_base_seconds": 10, "notifications_retry_cap_seconds": 300}
    )
    assert [retry_delay(n, s, rand=lambda: 1.0) for n in (1, 2, 3, 6, 40)] == [
        10,
        20,
        40,
        300,
        300,
    ]
    assert retry_delay(3, s, rand=lambda: 0.0) == 20


async def test_two_workers_never_send_one_row_twice(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """40 rows, two workers claiming at once: every row sent exactly once."""
    await add_endpoint(db, clinic)
    for _ in range(40):
        await store_voicemail(db, clinic, transcript=f"Message {uuid.uuid4()}")
    seen: Counter[str] = Counter()

    async def receive(request: httpx.Request) -> httpx.Response:
        seen[request.headers["webhook-id"]] += 1
        # Long enough that both workers' batches are in flight at the same time.
        await asyncio.sleep(0.05)
        return httpx.Response(200)

    no_outbound_http.post(HOOK_URL).mock(side_effect=receive)
    small = fast.model_copy(update={"worker_batch_size": 5})
    async with worker(small) as first, worker(small) as second:
        await asyncio.gather(deliver_all(first), deliver_all(second))
    rows = await outbox_rows(db)
    assert len(rows) == 40
    assert {r["status"] for r in rows} == {"delivered"}
    assert sorted(seen) == sorted(str(r["id"]) for r in rows)
    assert set(seen.values()) == {1}


async def test_http_target_is_refused_without_the_loopback_setting(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """http://127.0.0.1 is sent to only with NOTIFICATIONS_ALLOW_LOOPBACK_HTTP."""
    await add_endpoint(db, clinic, target="http://127.0.0.1:9/hook")
    await store_voicemail(db, clinic)
    route = no_outbound_http.post("http://127.0.0.1:9/hook").respond(200)
    async with worker(fast) as w:
        await deliver_all(w)
    [row] = await outbox_rows(db)
    assert row["status"] == "failed"
    assert row["attempts"] == 1
    assert "NOTIFICATIONS_ALLOW_LOOPBACK_HTTP" in row["last_error"]
    assert route.call_count == 0
    await db.execute("update notifications set status = 'pending', due_at = now()")
    async with worker(fast.model_copy(update={"notifications_allow_loopback_http": True})) as w:
        await deliver_all(w)
    assert route.call_count == 1


async def test_endpoint_turned_off_after_queueing_is_skipped(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """A clinic that turns a channel off stops what it had queued."""
    endpoint = await add_endpoint(db, clinic)
    await store_voicemail(db, clinic)
    await db.execute("update notification_endpoints set is_active = false where id = $1", endpoint)
    route = no_outbound_http.post(HOOK_URL).respond(200)
    async with worker(fast) as w:
        await deliver_all(w)
    assert route.call_count == 0
    [row] = await outbox_rows(db)
    assert (row["status"], row["last_error"]) == ("skipped", "endpoint turned off")


async def test_deleted_endpoint_gets_nothing_more(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """A channel deleted after queueing: its rows are skipped, the clinic's other channel gets
    its own."""
    doomed = await add_endpoint(db, clinic, target="https://old.clinic.example/hook")
    await add_endpoint(db, clinic)
    await store_voicemail(db, clinic)
    await db.execute("delete from notification_endpoints where id = $1", doomed)
    old = no_outbound_http.post("https://old.clinic.example/hook").respond(200)
    kept = no_outbound_http.post(HOOK_URL).respond(200)
    async with worker(fast) as w:
        await deliver_all(w)
    assert (old.call_count, kept.call_count) == (0, 1)
    rows = await db.fetch("select endpoint_id, status, last_error from notifications")
    assert {(r["endpoint_id"] == doomed, r["status"], r["last_error"]) for r in rows} == {
        (True, "skipped", "endpoint deleted"),
        (False, "delivered", None),
    }


async def test_urgent_message_is_sent_again_until_it_is_read(
    db: asyncpg.Connection, clinic: Clinic, fast: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """Reminders come due after the clinic's delay; once the message is read, the rest stop.

    A second contact, taking only reminders, hears of it only when it is still unread.
    """
    office_endpoint = await add_endpoint(db, clinic, remind_after_minutes=15, remind_times=3)
    await add_endpoint(
        db,
        clinic,
        target="https://manager.clinic.example/hook",
        events=["voicemail.unread_reminder"],
        remind_after_minutes=30,
        remind_times=1,
    )
    voicemail_id = await store_voicemail(db, clinic, urgent=True)
    office = no_outbound_http.post(HOOK_URL).respond(200)
    manager = no_outbound_http.post("https://manager.clinic.example/hook").respond(200)
    due = await db.fetch(
        "select reminder, round(extract(epoch from due_at - created_at) / 60)::int as minutes"
        " from notifications"
    )
    assert sorted((r["minutes"], r["reminder"] or 0) for r in due) == [
        (0, 0),
        (15, 1),
        (30, 1),
        (30, 2),
        (45, 3),
    ]

    async with worker(fast) as w:
        await deliver_all(w)
        assert office.call_count == 1
        assert manager.call_count == 0
        # Fifteen minutes later, still unread: the first reminder.
        await db.execute(
            "update notifications set due_at = now() where reminder = 1 and endpoint_id = $1",
            office_endpoint,
        )
        await deliver_all(w)
        assert office.call_count == 2
        reminder = orjson.loads(office.calls.last.request.content)
        assert reminder["type"] == "voicemail.unread_reminder"
        assert (reminder["data"]["reminder"], reminder["data"]["reminders"]) == (1, 3)
        # Read in the dashboard; then every later reminder comes due and none is sent.
        await db.execute("update voicemails set status = 'read' where id = $1", voicemail_id)
        await db.execute("update notifications set due_at = now() where status = 'pending'")
        await deliver_all(w)
    assert office.call_count == 2
    assert manager.call_count == 0
    statuses = Counter((r["status"], r["last_error"]) for r in await outbox_rows(db))
    assert statuses == {("delivered", None): 2, ("skipped", "message read"): 3}


async def test_notification_that_cannot_be_sent_fails_alone(
    db: asyncpg.Connection,
    clinic: Clinic,
    fast: Settings,
    no_outbound_http: respx.MockRouter,
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    """A row the worker can't render (here: a booking without its date) is retried and then
    failed with the crash logged; the other rows of its batch are delivered."""
    endpoint = await add_endpoint(
        db,
        clinic,
        kind="email",
        target="frontdesk@brightside.example",
        events=["appointment.booked"],
    )
    await db.execute(
        "insert into notifications (agent_configuration_id, endpoint_id, event, data)"
        " values ($1, $2, 'appointment.booked', '{}')",
        clinic.configuration_id,
        endpoint,
    )
    await add_endpoint(db, clinic)
    await store_voicemail(db, clinic)
    route = no_outbound_http.post(HOOK_URL).respond(200)
    # Mail is configured (nothing listens there: the row never gets as far as connecting).
    mail = worker_settings(
        fast, notifications_max_attempts=2, smtp_host="127.0.0.1", smtp_from="n@b.example"
    )
    async with worker(mail) as w:
        await deliver_all(w)
    assert route.call_count == 1
    statuses = {(r["event"], r["status"], r["attempts"]) for r in await outbox_rows(db)}
    assert statuses == {
        ("appointment.booked", "failed", 2),
        ("voicemail.created", "delivered", 1),
    }
    crashes = [e for e in json_logs() if e["event"] == "notification_attempt_crashed"]
    assert len(crashes) == 2
    assert "KeyError" in crashes[0]["exception"]


def test_worker_listens_on_a_session_connection_only(settings: Settings) -> None:
    """LISTEN goes to DIRECT_DATABASE_URL when set; behind a transaction pooler without it the
    worker only polls (the pooler would hand LISTEN's connection to other clients)."""
    pooler = "postgresql://u:p@pooler.example:6543/postgres"
    direct = "postgresql://u:p@db.example:5432/postgres"
    assert listen_url(settings, pooler) is None
    assert listen_url(settings, direct) == direct
    with_direct = settings.model_copy(update={"direct_database_url": direct})
    assert listen_url(with_direct, pooler) == direct

"""GET /metrics: request, latency, booking, webhook and database pool figures that move."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette

from service.metrics import Metrics
from service.state import State
from tests.conftest import load_fixture, post_signed
from tests.factories import Clinic
from tests.test_faults import next_weekday

# A Wednesday two weeks from today: bookable on any day the suite runs.
DAY = next_weekday().isoformat()

FUNCTION_ROUTE = "/retell/functions/{function_name}"


def _metrics(app: Starlette) -> Metrics:
    metrics: Metrics = app.state.metrics
    return metrics


def _value(app: Starlette, name: str, **labels: str) -> float:
    return _metrics(app).registry.get_sample_value(name, labels) or 0.0


def _envelope(clinic: Clinic, args: dict[str, Any], call_id: str = "call_m1") -> dict[str, Any]:
    return {
        "call": {"call_id": call_id, "agent_id": clinic.agent_id, "from_number": "+16175550187"},
        "args": args,
    }


async def test_function_requests_are_counted_with_latency(
    app: Starlette, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    """A function request moves the counter and the histogram for its route, function, status."""
    body = _envelope(clinic, {"date": DAY})
    response = await post_signed(client, "/retell/functions/check_availability", body)
    assert response.status_code == 200
    labels = {"endpoint": FUNCTION_ROUTE, "function": "check_availability"}
    assert _value(app, "requests_total", **labels, status="200") == 1
    assert _value(app, "request_duration_seconds_count", **labels) == 1
    assert _value(app, "request_duration_seconds_sum", **labels) > 0

    scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert (
        'requests_total{endpoint="/retell/functions/{function_name}",'
        'function="check_availability",status="200"} 1.0'
    ) in scraped.text
    assert 'request_duration_seconds_bucket{endpoint="/retell/functions/{function_name}",' in (
        scraped.text
    )


async def test_unknown_names_keep_labels_bounded(app: Starlette, client: httpx.AsyncClient) -> None:
    """An unknown function and an unknown path are counted as `unknown` and `unmatched`."""
    await post_signed(client, "/retell/functions/drop_tables_please", {"args": {}})
    await client.get("/no/such/path")
    assert (
        _value(app, "requests_total", endpoint=FUNCTION_ROUTE, function="unknown", status="404")
        == 1
    )
    assert _value(app, "requests_total", endpoint="unmatched", function="", status="404") == 1


async def test_bookings_made_and_refused_by_reason(
    app: Starlette, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    """A booking counts as booked; the same slot again from another call counts as taken."""
    args = {"patient_name": "Maria Gonzalez", "date": DAY, "time": "09:00"}
    args["staff_name"] = "Dr. Lee"
    path = "/retell/functions/book_appointment"
    first = await post_signed(client, path, _envelope(clinic, args, "call_a"))
    second = await post_signed(
        client, path, _envelope(clinic, {**args, "patient_name": "Other Person"}, "call_b")
    )
    missing = await post_signed(client, path, _envelope(clinic, {"date": DAY}, "call_c"))
    assert first.json()["booked"] is True
    assert second.json()["reason"] == "taken"
    assert missing.json()["ok"] is False
    function = "book_appointment"
    assert _value(app, "bookings_total", function=function, outcome="booked", reason="") == 1
    assert _value(app, "bookings_total", function=function, outcome="refused", reason="taken") == 1
    assert (
        _value(app, "bookings_total", function=function, outcome="refused", reason="invalid_args")
        == 1
    )


async def test_pool_sizes_are_read_at_scrape_time(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """The pool's maximum, idle and in-use connections are reported from the live pool."""
    state: State = app.state.service
    # Let the lifespan's background warm-up hand its connections back first.
    for _ in range(100):
        if state.pool.get_idle_size() == state.pool.get_size() >= state.settings.pool_min_size:
            break
        await asyncio.sleep(0.02)
    scraped = (await client.get("/metrics")).text
    assert f"db_pool_max_connections {float(state.settings.pool_max_size)}" in scraped
    idle = _value(app, "db_pool_connections", state="idle")
    in_use = _value(app, "db_pool_connections", state="in_use")
    assert idle + in_use == state.pool.get_size()
    async with state.pool.acquire():
        assert _value(app, "db_pool_connections", state="in_use") == in_use + 1


async def test_requests_waiting_for_a_connection_are_counted(
    make_app: Callable[..., Starlette], clinic: Clinic, db: asyncpg.Connection
) -> None:
    """With the only connection taken, a concurrent request shows as waiting until it frees."""
    app = make_app(pool_min_size=1, pool_max_size=1, pool_acquire_timeout_seconds=5)
    async with app.router.lifespan_context(app):
        state: State = app.state.service
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as c:
            held = await state.pool.acquire()
            body = _envelope(clinic, {"date": DAY})
            request = asyncio.create_task(
                post_signed(c, "/retell/functions/check_availability", body)
            )
            for _ in range(200):
                if _value(app, "db_pool_waiting") == 1:
                    break
                await asyncio.sleep(0.01)
            assert _value(app, "db_pool_waiting") == 1
            await state.pool.release(held)
            response = await request
            assert response.status_code == 200
            assert _value(app, "db_pool_waiting") == 0


async def test_webhook_outcomes_and_separate_registries(
    make_app: Callable[..., Starlette],
) -> None:
    """webhook_event counts by event and outcome, and each app keeps counts of its own."""
    one, two = make_app(), make_app()
    _metrics(one).webhook_event("call_ended", "stored")
    _metrics(one).webhook_event("call_ended", "duplicate")
    _metrics(one).webhook_event("call_ended", "duplicate")
    _metrics(one).webhook_event("something_new", "ignored")
    assert _value(one, "webhook_events_total", event="call_ended", outcome="duplicate") == 2
    assert _value(one, "webhook_events_total", event="other", outcome="ignored") == 1
    assert _value(two, "webhook_events_total", event="call_ended", outcome="duplicate") == 0


async def test_webhook_endpoints_count_their_events(
    app: Starlette, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    """Stored call events, ignored ones and inbound answers each move their counter."""
    ended = load_fixture("webhook_call_ended.json")
    ended["call"]["agent_id"] = clinic.agent_id
    assert (await post_signed(client, "/retell/webhook", ended)).status_code == 204
    transcript = {"event": "transcript_updated", "call": {"call_id": "call_x"}}
    assert (await post_signed(client, "/retell/webhook", transcript)).status_code == 204
    inbound = load_fixture("webhook_call_inbound.json")
    inbound["call_inbound"]["agent_id"] = clinic.agent_id
    assert (await post_signed(client, "/retell/inbound", inbound)).status_code == 200
    assert _value(app, "webhook_events_total", event="call_ended", outcome="stored") == 1
    assert _value(app, "webhook_events_total", event="transcript_updated", outcome="ignored") == 1
    assert _value(app, "webhook_events_total", event="call_inbound", outcome="answered") == 1


async def test_duplicate_webhooks_are_absorbed_and_counted(
    app: Starlette, client: httpx.AsyncClient, clinic: Clinic, db: asyncpg.Connection
) -> None:
    """A retried call_ended is stored once and counted as a duplicate absorbed."""
    ended = load_fixture("webhook_call_ended.json")
    ended["call"]["agent_id"] = clinic.agent_id
    answers = await asyncio.gather(
        *(post_signed(client, "/retell/webhook", ended) for _ in range(3))
    )
    assert [a.status_code for a in answers] == [204, 204, 204]
    assert _value(app, "webhook_events_total", event="call_ended", outcome="stored") == 1
    assert _value(app, "webhook_events_total", event="call_ended", outcome="duplicate") == 2
    rows = await db.fetch(
        "select duration_ms, events ? 'call_ended' as has_event from customer_call_logs"
    )
    assert [(r["duration_ms"], r["has_event"]) for r in rows] == [(55820, True)]

"""A clinic's channels: only well-formed ones are stored, and no other clinic can see or steer
them (nor read the outbox, which holds patients' names and numbers)."""

from __future__ import annotations

import asyncpg
import pytest

from tests.factories import Clinic, create_clinic
from tests.outbox import add_endpoint, new_secret, store_voicemail
from tests.test_rls import signed_in


@pytest.fixture
def db(rollback_db: asyncpg.Connection) -> asyncpg.Connection:
    return rollback_db


@pytest.mark.parametrize(
    ("kind", "target", "secret", "events"),
    [
        ("webhook", "http://hooks.example.com/x", "good", None),
        ("webhook", "ftp://hooks.example.com/x", "good", None),
        ("webhook", "https://hooks.example.com/x", None, None),
        ("webhook", "https://hooks.example.com/x", "whsec_short", None),
        ("webhook", "https://hooks.example.com/x", "good", ["appointment.created"]),
        ("email", "frontdesk", None, None),
        ("sms", "617 555 0142", None, None),
        ("pager", "+16175550142", None, None),
    ],
)
async def test_malformed_channels_are_refused(
    db: asyncpg.Connection,
    clinic: Clinic,
    kind: str,
    target: str,
    secret: str | None,
    events: list[str] | None,
) -> None:
    """http:// off loopback, other schemes, missing or short secrets, unknown events, numbers not
    in E.164, addresses without a domain, unknown kinds: a check violation, nothing stored."""
    with pytest.raises(asyncpg.CheckViolationError):
        async with db.transaction():
            await db.execute(
                "insert into notification_endpoints"
                " (agent_configuration_id, kind, target, secret, events)"
                " values ($1, $2, $3, $4, $5)",
                clinic.configuration_id,
                kind,
                target,
                new_secret() if secret == "good" else secret,
                events,
            )
    assert await db.fetchval("select count(*) from notification_endpoints") == 0


async def test_well_formed_channels_are_stored(db: asyncpg.Connection, clinic: Clinic) -> None:
    """https and loopback http webhooks, an address and an E.164 number are all accepted."""
    await add_endpoint(db, clinic)
    await add_endpoint(db, clinic, target="http://127.0.0.1:8099/hook")
    await add_endpoint(db, clinic, kind="email", target="frontdesk@brightside.example")
    await add_endpoint(db, clinic, kind="sms", target="+16175550142", remind_after_minutes=10)
    assert await db.fetchval("select count(*) from notification_endpoints") == 4


async def test_another_clinic_cannot_see_or_steer_the_channels(db: asyncpg.Connection) -> None:
    """Signed in as clinic B: A's endpoints (and their secrets) and A's outbox are invisible,
    A's endpoint can't be changed or deleted, and none can be added to A's configuration."""
    a = await create_clinic(db, agent_id="agent_aaaaaaaaaaaaaaaaaaaaaaaa", with_staff=False)
    b = await create_clinic(db, agent_id="agent_bbbbbbbbbbbbbbbbbbbbbbbb", with_staff=False)
    endpoint = await add_endpoint(db, a)
    await store_voicemail(db, a)
    async with signed_in(db, b.user_id):
        assert await db.fetchval("select count(*) from notification_endpoints") == 0
        assert await db.fetchval("select count(*) from notifications") == 0
        assert await db.fetchval("select count(*) from notification_failures") == 0
        moved = await db.execute(
            "update notification_endpoints set target = 'https://attacker.example/x' where id = $1",
            endpoint,
        )
        assert moved == "UPDATE 0"
        assert await db.execute("delete from notification_endpoints") == "DELETE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with db.transaction():
                await db.execute(
                    "insert into notification_endpoints (agent_configuration_id, kind, target)"
                    " values ($1, 'email', 'x@evil.example')",
                    a.configuration_id,
                )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with db.transaction():
                await db.execute("update notifications set status = 'delivered'")
    async with signed_in(db, a.user_id):
        assert await db.fetchval("select count(*) from notification_endpoints") == 1
        assert await db.fetchval("select count(*) from notifications") == 1
        # A clinic manages its own channels.
        await db.execute(
            "update notification_endpoints set is_active = false where id = $1", endpoint
        )
    assert await db.fetchval("select target from notification_endpoints") == (
        "https://hooks.clinic.example/receptionist"
    )

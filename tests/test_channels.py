"""Email through a real SMTP server (aiosmtpd) and SMS through Twilio's API (respx)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import httpx
import orjson
import pytest
import respx
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from service.config import Settings
from tests.conftest import free_port
from tests.factories import Clinic
from tests.outbox import (
    add_endpoint,
    deliver_all,
    outbox_rows,
    store_voicemail,
    worker,
    worker_settings,
)

TWILIO_SID = "AC" + "0" * 32
TWILIO_MESSAGES = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"


class Mailbox:
    """An aiosmtpd handler (its hooks named as aiosmtpd calls them) that keeps every message it
    accepts, or refuses the sender or the recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.refuse_with: str | None = None
        self.refuse_sender_with: str | None = None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse_sender_with:
            return self.refuse_sender_with
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse_with:
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server on a free local port."""
    handler = Mailbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_settings(settings: Settings, mailbox: tuple[Mailbox, int]) -> Settings:
    return worker_settings(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1],
        smtp_tls="none",
        smtp_from="Receptionist <notifications@brightside.example>",
    )


async def test_urgent_message_is_mailed_to_the_clinic(
    db: asyncpg.Connection, clinic: Clinic, smtp_settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    """The office gets a mail naming the caller, number and subject, not the message itself."""
    await add_endpoint(db, clinic, kind="email", target="frontdesk@brightside.example")
    voicemail_id = await store_voicemail(db, clinic, urgent=True)
    async with worker(smtp_settings) as w:
        await deliver_all(w)
    [(recipients, message)] = mailbox[0].messages
    assert recipients == ["frontdesk@brightside.example"]
    assert message["Subject"] == "Urgent message from James Whitaker: Crown came off"
    assert message["From"] == "Receptionist <notifications@brightside.example>"
    [row] = await outbox_rows(db)
    assert message["Message-ID"] == f"<{row['id']}@notifications.clinic-voice>"
    body = message.get_content()
    assert "Call back on: +16175550163" in body
    assert f"Message id: {voicemail_id}" in body
    assert "crown came off and it hurts" not in body.lower()
    assert row["status"] == "delivered"


async def test_opted_in_mail_carries_the_message(
    db: asyncpg.Connection, clinic: Clinic, smtp_settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    """With include_details the message's words are in the mail."""
    await add_endpoint(
        db, clinic, kind="email", target="frontdesk@brightside.example", include_details=True
    )
    await store_voicemail(db, clinic)
    async with worker(smtp_settings) as w:
        await deliver_all(w)
    [(_, message)] = mailbox[0].messages
    assert message["Subject"] == "Message from James Whitaker: Crown came off"
    assert "Message: My crown came off and it hurts" in message.get_content()


async def test_refused_recipient_fails_without_retrying(
    db: asyncpg.Connection, clinic: Clinic, smtp_settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    """A 550 for the recipient is the server's last word: failed after one attempt."""
    mailbox[0].refuse_with = "550 No such user here"
    await add_endpoint(db, clinic, kind="email", target="nobody@brightside.example")
    await store_voicemail(db, clinic)
    async with worker(smtp_settings) as w:
        await deliver_all(w)
    [row] = await outbox_rows(db)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert mailbox[0].messages == []


async def test_refused_sender_is_the_operators_to_mend_and_is_retried(
    db: asyncpg.Connection, clinic: Clinic, smtp_settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    """A 553 for SMTP_FROM (the operator's setting, not the clinic's address) keeps the mail
    waiting; it goes out once the server takes the sender."""
    mailbox[0].refuse_sender_with = "553 5.7.1 Sender address rejected"
    await add_endpoint(db, clinic, kind="email", target="frontdesk@brightside.example")
    await store_voicemail(db, clinic)
    async with worker(smtp_settings) as w:
        await w.deliver_due()
        [row] = await outbox_rows(db)
        assert (row["status"], row["last_error"]) == ("pending", "SMTP 553 (SMTPSenderRefused)")
        mailbox[0].refuse_sender_with = None
        await deliver_all(w)
    assert len(mailbox[0].messages) == 1
    [row] = await outbox_rows(db)
    assert row["status"] == "delivered"


async def test_mail_server_down_is_retried_then_delivered(
    db: asyncpg.Connection, clinic: Clinic, settings: Settings
) -> None:
    """No SMTP server listening: the mail waits, and goes out once one answers."""
    port = free_port()
    smtp = worker_settings(
        settings, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none", smtp_from="n@b.example"
    )
    await add_endpoint(db, clinic, kind="email", target="frontdesk@brightside.example")
    await store_voicemail(db, clinic)
    async with worker(smtp) as w:
        await w.deliver_due()
        [row] = await outbox_rows(db)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert row["last_error"].startswith("SMTP ")
        handler = Mailbox()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            await deliver_all(w)
        finally:
            controller.stop()
    assert len(handler.messages) == 1
    [row] = await outbox_rows(db)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


@pytest.fixture
def twilio_settings(settings: Settings) -> Settings:
    return worker_settings(
        settings,
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=SecretStr("twilio-token-not-real-0123"),
        twilio_from_number="+16175550199",
    )


@pytest.fixture
async def urgent_text(db: asyncpg.Connection, clinic: Clinic) -> None:
    """An on-call number, and an urgent message queued for it."""
    await add_endpoint(db, clinic, kind="sms", target="+16175550142")
    await store_voicemail(db, clinic, urgent=True)


@pytest.mark.usefixtures("urgent_text")
async def test_urgent_message_is_texted_to_the_on_call_number(
    db: asyncpg.Connection, twilio_settings: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """Twilio gets To, From and a short Body, with the account's basic auth."""
    route = no_outbound_http.post(TWILIO_MESSAGES).respond(201, json={"sid": "SM1"})
    async with worker(twilio_settings) as w:
        await deliver_all(w)
    assert route.call_count == 1
    request = route.calls.last.request
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form["To"] == "+16175550142"
    assert form["From"] == "+16175550199"
    assert form["Body"] == (
        "Brightside Dental: Urgent message from James Whitaker: Crown came off."
        " Call back +16175550163."
    )
    expected = httpx.BasicAuth(TWILIO_SID, "twilio-token-not-real-0123")
    assert (
        request.headers["authorization"]
        == next(expected.auth_flow(httpx.Request("GET", "https://x"))).headers["authorization"]
    )
    [row] = await outbox_rows(db)
    assert row["status"] == "delivered"


async def test_text_messages_are_for_urgent_messages_only(
    db: asyncpg.Connection, clinic: Clinic
) -> None:
    """A normal message queues nothing for the SMS channel."""
    await add_endpoint(db, clinic, kind="sms", target="+16175550142")
    await store_voicemail(db, clinic, urgent=False)
    assert await outbox_rows(db) == []


@pytest.mark.usefixtures("urgent_text")
async def test_number_twilio_rejects_fails_at_once(
    db: asyncpg.Connection, twilio_settings: Settings, no_outbound_http: respx.MockRouter
) -> None:
    """Twilio's 400 (an invalid number) is final; its 500 is retried."""
    no_outbound_http.post(TWILIO_MESSAGES).mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(400, json={"code": 21211, "message": "Invalid 'To' Phone Number"}),
        ]
    )
    async with worker(twilio_settings) as w:
        await deliver_all(w)
    [row] = await outbox_rows(db)
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "failed",
        2,
        "Twilio 400 (error 21211)",
    )


@pytest.mark.usefixtures("urgent_text")
async def test_secrets_stay_out_of_the_log(
    db: asyncpg.Connection,
    twilio_settings: Settings,
    no_outbound_http: respx.MockRouter,
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    """A failing SMS logs the attempt and its reason, never the Twilio token, the number or the
    message."""
    no_outbound_http.post(TWILIO_MESSAGES).respond(401, json={"code": 20003})
    async with worker(twilio_settings) as w:
        await w.deliver_due()
    text = "\n".join(orjson.dumps(line).decode() for line in json_logs())
    assert "notification_retry" in text
    assert "Twilio 401 (error 20003)" in text
    for secret in ("twilio-token-not-real-0123", "+16175550142", "+16175550163", "crown"):
        assert secret not in text

"""The clinic's channels: Standard Webhooks over HTTPS, email over SMTP, SMS through Twilio."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import uuid
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiosmtplib
import httpx
import orjson
from pydantic import BaseModel

from service.config import Settings, secret_value
from service.speech import spoken_date, spoken_time

# The Standard Webhooks secret format's prefix, not a secret.
SECRET_PREFIX = "whsec_"  # noqa: S105
USER_AGENT = "clinic-voice-service-notifications/1"


class Notification(BaseModel):
    """One claimed row of the outbox with its endpoint, as the worker reads it."""

    id: uuid.UUID
    event: str
    data: dict[str, Any]
    attempts: int
    created_at: datetime
    kind: Literal["webhook", "email", "sms"]
    target: str
    secret: str | None
    is_active: bool
    # A reminder whose message has been read (or deleted) since it was queued.
    already_read: bool


class DeliveryError(Exception):
    """An attempt that did not deliver: `reason` is a few words, never a secret or a body.

    A permanent one (a target the worker may not send to, a number Twilio rejects) is not
    retried.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


# ---- webhooks ---------------------------------------------------------------------------


def webhook_body(notification: Notification) -> bytes:
    """{"type", "timestamp", "data"}: the same bytes on every attempt."""
    return orjson.dumps(
        {
            "type": notification.event,
            "timestamp": notification.created_at.isoformat(),
            "data": notification.data,
        }
    )


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature: v1, base64 HMAC-SHA256 of "id.timestamp.body"."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_target_problem(url: str, *, allow_loopback_http: bool) -> str | None:
    """Why the worker must not post to `url`, or None.

    https to a public host; plain http only to loopback and only when the operator allows it.
    Private, link-local and loopback addresses written as IPs are refused over https too: a
    clinic's endpoint is a public service, never the operator's own network.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "target is not a URL"
    host = parsed.host
    loopback = host == "localhost" or _is_ip(host, "loopback")
    if parsed.scheme == "http":
        if loopback and allow_loopback_http:
            return None
        return (
            "http:// targets are accepted only on loopback with NOTIFICATIONS_ALLOW_LOOPBACK_HTTP"
        )
    if parsed.scheme != "https" or not host:
        return "target is not an https URL"
    if loopback:
        return (
            None
            if allow_loopback_http
            else "loopback targets need NOTIFICATIONS_ALLOW_LOOPBACK_HTTP"
        )
    if _is_ip(host, "private"):
        return "target is a private address"
    return None


def _is_ip(host: str, kind: Literal["loopback", "private"]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if kind == "loopback":
        return address.is_loopback
    return not address.is_global


async def send_webhook(
    http: httpx.AsyncClient, notification: Notification, settings: Settings, now: datetime
) -> None:
    problem = webhook_target_problem(
        notification.target, allow_loopback_http=settings.notifications_allow_loopback_http
    )
    if problem is not None:
        raise DeliveryError(problem, permanent=True)
    if not notification.secret:
        raise DeliveryError("endpoint has no signing secret", permanent=True)
    body = webhook_body(notification)
    message_id = str(notification.id)
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(notification.secret, message_id, timestamp, body),
    }
    try:
        response = await http.post(
            notification.target,
            content=body,
            headers=headers,
            timeout=settings.notifications_webhook_timeout_seconds,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        raise DeliveryError("timeout") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"connection failed ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code}")


# ---- what a person reads ----------------------------------------------------------------


def _local(data: dict[str, Any], key: str) -> str:
    """An instant of `data` as the clinic's wall clock: 'Wednesday, December 2 at 9:00 AM'."""
    raw = data.get(key)
    if not isinstance(raw, str):
        return ""
    instant = datetime.fromisoformat(raw)
    with contextlib.suppress(ZoneInfoNotFoundError):
        instant = instant.astimezone(ZoneInfo(str(data.get("timezone") or "UTC")))
    return f"{spoken_date(instant.date())} at {spoken_time(instant.time())}"


def _when(appointment: dict[str, Any]) -> str:
    text = f"{spoken_date(appointment['date'])} at {spoken_time(appointment['time'])}"
    if appointment.get("staff_name"):
        text += f" with {appointment['staff_name']}"
    return text


def _caller(data: dict[str, Any]) -> str:
    return str(data.get("caller_name") or data.get("caller_phone") or "a caller")


def subject_line(notification: Notification) -> str:
    """One line saying what happened: an email's subject, the start of a text message."""
    data = notification.data
    event = notification.event
    if event in ("voicemail.created", "voicemail.unread_reminder"):
        urgent = "Urgent message" if data.get("is_urgent") else "Message"
        line = f"{urgent} from {_caller(data)}"
        if data.get("subject"):
            line += f": {data['subject']}"
        if event == "voicemail.unread_reminder":
            line = (
                f"Still unread (reminder {data.get('reminder')} of {data.get('reminders')}): {line}"
            )
        return line
    what = {
        "appointment.booked": "New appointment",
        "appointment.rescheduled": "Appointment moved",
        "appointment.cancelled": "Appointment cancelled",
    }.get(event, event)
    return f"{what}: {data.get('patient_name')}, {_when(data)}"


def _lines(notification: Notification) -> list[tuple[str, Any]]:
    data = notification.data
    if notification.event.startswith("voicemail."):
        return [
            ("From", data.get("caller_name")),
            ("Call back on", data.get("caller_phone")),
            ("Email", data.get("caller_email")),
            ("Subject", data.get("subject")),
            ("Type", str(data.get("message_type") or "").replace("_", " ")),
            ("Priority", data.get("priority")),
            ("Received", _local(data, "received_at")),
            ("Message", data.get("message")),
            ("Message id", data.get("voicemail_id")),
        ]
    previous = data.get("previous")
    return [
        ("Patient", data.get("patient_name")),
        ("Phone", data.get("patient_phone")),
        ("Email", data.get("patient_email")),
        ("When", _when(data)),
        ("Was", _when(previous) if isinstance(previous, dict) else None),
        ("Length", f"{data['duration_minutes']} minutes" if data.get("duration_minutes") else None),
        ("Type", data.get("appointment_type")),
        ("Notes", data.get("notes")),
        ("Special requests", data.get("special_requests")),
        ("Appointment id", data.get("appointment_id")),
    ]


def email_text(notification: Notification) -> str:
    business = notification.data.get("business_name") or "Your clinic"
    lines = [f"{business}: {subject_line(notification)}", ""]
    lines += [f"{label}: {value}" for label, value in _lines(notification) if value]
    lines += [
        "",
        "Sent by your AI receptionist. This notification's id is "
        f"{notification.id}; a repeat with the same id is the same notification.",
    ]
    return "\n".join(lines) + "\n"


def sms_text(notification: Notification) -> str:
    """Short enough for one or two SMS segments; the message itself only when opted in."""
    data = notification.data
    business = data.get("business_name") or "Clinic"
    text = f"{business}: {subject_line(notification)}."
    if data.get("caller_phone"):
        text += f" Call back {data['caller_phone']}."
    message = data.get("message")
    if isinstance(message, str) and message:
        text += f' "{message[:240]}{"..." if len(message) > 240 else ""}"'
    return text


# ---- email ------------------------------------------------------------------------------


def email_message(notification: Notification, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notification.target
    message["Subject"] = subject_line(notification)
    # The same Message-ID on every attempt: a mail client shows a retried one once.
    message["Message-ID"] = f"<{notification.id}@notifications.clinic-voice>"
    message["X-Notification-Id"] = str(notification.id)
    message["X-Notification-Type"] = notification.event
    message.set_content(email_text(notification))
    return message


async def send_email(notification: Notification, settings: Settings) -> None:
    if not settings.smtp_host or not settings.smtp_from:
        raise DeliveryError("email is not configured (SMTP_HOST, SMTP_FROM)")
    password = secret_value(settings.smtp_password)
    try:
        await aiosmtplib.send(
            email_message(notification, settings.smtp_from),
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=password,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            timeout=settings.smtp_timeout_seconds,
        )
    except aiosmtplib.SMTPRecipientsRefused:
        raise DeliveryError("recipient refused", permanent=True) from None
    except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
        # A 5xx about this recipient or this message is the server's final answer; 4xx is "try
        # again later".
        raise DeliveryError(f"SMTP {exc.code}", permanent=500 <= exc.code < 600) from None
    except aiosmtplib.SMTPResponseException as exc:
        # The account or the sender (a wrong password, SMTP_FROM refused): the operator's to
        # mend, and the mail goes out once they have.
        raise DeliveryError(f"SMTP {exc.code} ({type(exc).__name__})") from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {type(exc).__name__}") from None


# ---- SMS --------------------------------------------------------------------------------


async def send_sms(http: httpx.AsyncClient, notification: Notification, settings: Settings) -> None:
    sid, token, sender = (
        settings.twilio_account_sid,
        secret_value(settings.twilio_auth_token),
        settings.twilio_from_number,
    )
    if not sid or not token or not sender:
        raise DeliveryError(
            "SMS is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER)"
        )
    url = f"{settings.twilio_api_base_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
    try:
        response = await http.post(
            url,
            data={"To": notification.target, "From": sender, "Body": sms_text(notification)},
            auth=(sid, token),
            timeout=settings.notifications_webhook_timeout_seconds,
        )
    except httpx.TimeoutException:
        raise DeliveryError("Twilio timeout") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"Twilio connection failed ({type(exc).__name__})") from None
    if response.status_code in (200, 201):
        return
    code = _twilio_error_code(response)
    reason = f"Twilio {response.status_code}" + (f" (error {code})" if code else "")
    # 400: Twilio refuses this message (an invalid or unreachable number); retrying won't help.
    raise DeliveryError(reason, permanent=response.status_code == 400)


def _twilio_error_code(response: httpx.Response) -> int | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


async def deliver(
    http: httpx.AsyncClient, notification: Notification, settings: Settings, now: datetime
) -> None:
    """One attempt on the notification's channel; raises DeliveryError when it did not land."""
    if notification.kind == "webhook":
        await send_webhook(http, notification, settings, now)
    elif notification.kind == "email":
        await send_email(notification, settings)
    else:
        await send_sms(http, notification, settings)

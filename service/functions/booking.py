"""book_appointment, find_appointments, cancel_appointment and reschedule_appointment."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import Field, model_validator

from service.functions.args import (
    Args,
    Email,
    LocalDate,
    LocalTime,
    LongText,
    Minutes,
    Name,
    Phone,
    Text,
    normalize_phone,
)
from service.functions.base import (
    Appointment,
    Context,
    Function,
    ListedAppointment,
    Refusal,
    Result,
    Slot,
)
from service.functions.problems import phone_or_refuse
from service.speech import spoken_date, spoken_list, spoken_slot, spoken_slots, spoken_time


def _phone_or_refuse(raw: str | None, context: Context, *, field: str) -> str | None:
    return None if raw is None else phone_or_refuse(raw, context, field=field)


class BookAppointmentArgs(Args):
    """Arguments of book_appointment."""

    ASK: ClassVar[dict[str, str]] = {
        "patient_name": "May I have the patient's full name?",
        "date": "Which day would you like to come in?",
        "time": "What time would you like?",
    }

    patient_name: Name = Field(description="The patient's full name.")
    date: LocalDate = Field(description="YYYY-MM-DD in the clinic's zone.")
    time: LocalTime = Field(description="HH:MM, 24-hour, in the clinic's zone.")
    patient_phone: Phone = Field(default=None, description="Default: the caller's number.")
    patient_email: Email = None
    staff_name: Name = Field(default=None, description="Absent: anyone free at that time.")
    staff_member_id: UUID | None = None
    staff_role: Text = None
    appointment_type: Text = Field(default=None, description="e.g. cleaning, checkup.")
    duration_minutes: Minutes = None
    notes: LongText = None
    special_requests: LongText = None

    @model_validator(mode="after")
    def _name_present(self) -> BookAppointmentArgs:
        if self.patient_name is None:
            raise ValueError("patient_name_missing")
        return self


def prepare_booking(args: BookAppointmentArgs, context: Context) -> dict[str, Any]:
    phone = _phone_or_refuse(args.patient_phone, context, field="patient_phone")
    if phone is None:
        phone = _phone_or_refuse(context.caller_number, context, field="patient_phone")
    if phone is None:
        raise Refusal(
            "What's the best phone number to reach the patient?",
            reason="phone_required",
        )
    out = args.for_database()
    out["patient_phone"] = phone
    return out


class Booking(Result):
    """rx_book_appointment's and rx_reschedule_appointment's answer: booked, or why not."""

    booked: bool
    appointment: Appointment | None = None
    reason: str | None = None
    alternatives: list[Slot] = Field(default_factory=list)


BOOK_APPOINTMENT_SQL = "select rx_book_appointment($1, $2::jsonb, $3::jsonb, $4, $5)"
RESCHEDULE_APPOINTMENT_SQL = "select rx_reschedule_appointment($1, $2::jsonb, $3::jsonb, $4, $5)"


def _booked(appointment: Appointment, verb: str) -> dict[str, Any]:
    return {
        "ok": True,
        "booked": True,
        "appointment_id": appointment["appointment_id"],
        "date": appointment["date"],
        "time": appointment["time"],
        "start": appointment["start"],
        "staff_member_id": appointment["staff_member_id"],
        "staff_name": appointment["staff_name"],
        "message": f"{verb} {spoken_slot(appointment)}.",
    }


_REASONS = {
    "taken": "That time is already taken",
    "outside_hours": "We aren't seeing patients at that time",
    "too_soon": "That time is too soon to book",
    "nonexistent_time": "That time doesn't exist on that day because the clocks change",
}


def _not_booked(result: Booking, wanted: str) -> dict[str, Any]:
    alternatives = result.alternatives
    reason = result.reason
    sentence = f"{_REASONS.get(reason or '', 'That time is not available')} {wanted}."
    if alternatives:
        sentence += f" The nearest openings are {spoken_slots(alternatives)}."
    else:
        sentence += " I don't see any openings that week; would another week work?"
    return {
        "ok": False,
        "booked": False,
        "reason": reason,
        "alternatives": alternatives,
        "message": sentence,
    }


def speak_booking(result: Booking, args: BookAppointmentArgs, context: Context) -> dict[str, Any]:
    if result.booked and result.appointment is not None:
        return _booked(result.appointment, "You're booked for")
    return _not_booked(result, f"on {spoken_date(args.date)} at {spoken_time(args.time)}")


class CallerArgs(Args):
    """Who the caller is, for finding their own appointments."""

    patient_phone: Phone = Field(default=None, description="Default: the caller's number.")
    patient_name: Name = None


def _caller_identity(args: CallerArgs, context: Context) -> dict[str, Any]:
    out = args.for_database()
    given = _phone_or_refuse(args.patient_phone, context, field="patient_phone")
    if given is not None:
        out["patient_phone"] = given
    own = context.caller_number
    if own is None and (given is None or args.patient_name is None):
        raise Refusal(
            "To find the booking I need the phone number and the full name it was made under.",
            reason="identity_required",
        )
    own_normalized = (normalize_phone(own, context.region) or own) if own else None
    if given is not None and given != own_normalized and args.patient_name is None:
        raise Refusal(
            "For a booking under another number I also need the patient's full name.",
            reason="identity_required",
        )
    out.pop("own_phone", None)
    if own_normalized is not None:
        out["own_phone"] = own_normalized
    return out


class Appointments(Result):
    """rx_find_appointments' answer: the caller's upcoming appointments, soonest first."""

    appointments: list[ListedAppointment]


FIND_APPOINTMENTS_SQL = "select rx_find_appointments($1, $2::jsonb, $3::jsonb, $4, $5)"


def speak_find(result: Appointments, args: CallerArgs, context: Context) -> dict[str, Any]:
    appointments = result.appointments
    if not appointments:
        message = "I don't see any upcoming appointments under that number."
    elif len(appointments) == 1:
        message = f"You have one upcoming appointment: {spoken_slot(appointments[0])}."
    else:
        shown = spoken_list([spoken_slot(a) for a in appointments[:3]], "and")
        message = f"You have {len(appointments)} upcoming appointments: {shown}."
        if len(appointments) > 3:
            message += " I can go through the rest too."
    return {"ok": True, "appointments": appointments, "message": message}


class SelectorArgs(CallerArgs):
    """Names one of the caller's appointments: by id, or by date (and time)."""

    ASK: ClassVar[dict[str, str]] = {
        "date": "Which day is the appointment you'd like to change?",
    }

    appointment_id: UUID | None = None
    date: LocalDate | None = Field(default=None, description="The appointment's date.")
    time: LocalTime | None = Field(default=None, description="The appointment's time.")

    @model_validator(mode="after")
    def _selects(self) -> SelectorArgs:
        if self.appointment_id is None and self.date is None:
            raise ValueError("selector_missing")
        return self


def prepare_selector(args: SelectorArgs, context: Context) -> dict[str, Any]:
    return _caller_identity(args, context)


class Cancellation(Result):
    """rx_cancel_appointment's answer: the appointment, and whether it was cancelled before."""

    appointment: Appointment
    already: bool = False


CANCEL_APPOINTMENT_SQL = "select rx_cancel_appointment($1, $2::jsonb, $3::jsonb, $4, $5)"


def speak_cancel(result: Cancellation, args: SelectorArgs, context: Context) -> dict[str, Any]:
    appointment = result.appointment
    if result.already:
        message = f"The appointment on {spoken_slot(appointment)} was already cancelled."
    else:
        message = f"I've cancelled the appointment on {spoken_slot(appointment)}."
    return {
        "ok": True,
        "cancelled": True,
        "appointment_id": appointment["appointment_id"],
        "message": message,
    }


class RescheduleArgs(SelectorArgs):
    """Arguments of reschedule_appointment."""

    ASK: ClassVar[dict[str, str]] = {
        **SelectorArgs.ASK,
        "new_date": "Which day would you like to move it to?",
        "new_time": "What time would suit you on the new day?",
    }

    new_date: LocalDate = Field(description="YYYY-MM-DD")
    new_time: LocalTime = Field(description="HH:MM, 24-hour")
    staff_name: Name = Field(default=None, description="Absent: the same staff member.")
    staff_member_id: UUID | None = Field(default=None, description="Absent: the same one.")


def speak_reschedule(result: Booking, args: RescheduleArgs, context: Context) -> dict[str, Any]:
    if result.booked and result.appointment is not None:
        return _booked(result.appointment, "Done: your appointment is now")
    body = _not_booked(result, f"on {spoken_date(args.new_date)} at {spoken_time(args.new_time)}")
    body["message"] += " Your original appointment is unchanged."
    return body


_NOT_BOOKED = {"booked": False, "alternatives": []}

FUNCTIONS = [
    Function(
        name="book_appointment",
        description=(
            "Book an appointment at a time check_availability offered. On ok=false, offer the "
            "returned alternatives."
        ),
        args=BookAppointmentArgs,
        sql=BOOK_APPOINTMENT_SQL,
        result=Booking,
        speak=speak_booking,
        prepare=prepare_booking,
        refusal_fields=lambda: dict(_NOT_BOOKED),
    ),
    Function(
        name="find_appointments",
        description="List the caller's upcoming appointments.",
        args=CallerArgs,
        sql=FIND_APPOINTMENTS_SQL,
        result=Appointments,
        speak=speak_find,
        prepare=_caller_identity,
        refusal_fields=lambda: {"appointments": []},
    ),
    Function(
        name="cancel_appointment",
        description="Cancel one of the caller's upcoming appointments.",
        args=SelectorArgs,
        sql=CANCEL_APPOINTMENT_SQL,
        result=Cancellation,
        speak=speak_cancel,
        prepare=prepare_selector,
        refusal_fields=lambda: {"cancelled": False},
    ),
    Function(
        name="reschedule_appointment",
        description="Move one of the caller's upcoming appointments to a new date and time.",
        args=RescheduleArgs,
        sql=RESCHEDULE_APPOINTMENT_SQL,
        result=Booking,
        speak=speak_reschedule,
        prepare=prepare_selector,
        refusal_fields=lambda: dict(_NOT_BOOKED),
    ),
]

"""What every custom function family shares: who is asking, a refusal, a function's parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

# pydantic reads TypedDicts from typing_extensions on Python 3.11.
from typing_extensions import TypedDict

from service.functions.args import Args
from service.retell import Call


@dataclass(frozen=True)
class Context:
    """Who is asking: the clinic's agent, the live call, the caller's region, and now."""

    agent_id: str
    call: Call
    region: str
    now: datetime

    @property
    def caller_number(self) -> str | None:
        """The caller's own number: from_number on inbound calls, to_number on outbound ones."""
        if self.call.direction == "outbound":
            return self.call.to_number
        return self.call.from_number


class Refusal(Exception):
    """Arguments that can't be honoured: answered 200 with ok false and this sentence."""

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class Result(BaseModel):
    """Base of a database function's answer, parsed once it arrives; unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# Items the answers pass on to the agent as they are: TypedDicts, so that pydantic checks them
# and hands back plain dicts holding exactly these keys, ready for the response.
class Slot(TypedDict):
    """A free slot, as slot_json builds it: ISO date, HH:MM time, the instant and who."""

    # In jsonb's own key order (shortest first), so the answer keeps the database's order.
    date: str
    time: str
    start: str
    staff_name: str
    staff_member_id: str


class ListedAppointment(TypedDict):
    """An appointment as find_appointments lists it to the agent: without the patient's name."""

    appointment_id: str
    date: str
    time: str
    start: str
    staff_member_id: str
    staff_name: str
    appointment_type: str | None
    status: str


class Appointment(ListedAppointment):
    """An appointment, as appointment_json builds it."""

    patient_name: str
    duration_minutes: int


A = TypeVar("A", bound=Args)
R = TypeVar("R", bound=Result)


@dataclass(frozen=True)
class Function(Generic[A, R]):
    """One custom function: its arguments, the SQL it sends, its answer, and how it speaks."""

    name: str
    description: str
    args: type[A]
    # `select rx_...($1, $2::jsonb, $3::jsonb, $4, $5)`: agent, call, arguments, now, notice.
    sql: str
    result: type[R]
    speak: Callable[[R, A, Context], dict[str, Any]]
    # Turns validated arguments into the database's JSON (e.g. phones to E.164); may refuse.
    prepare: Callable[[A, Context], dict[str, Any]] | None = None
    refusal_fields: Callable[[], dict[str, Any]] = dict

"""Domain values shared by every IonVeil service.

One severity scale runs through the whole system: 1 (least urgent) to 5 (critical). A dispatch
event's ``severity`` and an incident's ``priority`` both use it, and ``SLA_BY_SEVERITY`` gives
the minutes allowed from dispatch to the first unit on scene (ARCHITECTURE.md, "Domain rules").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum
from typing import Any

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SEVERITY",
    "MIN_SEVERITY",
    "SLA_BY_SEVERITY",
    "DispatchOrder",
    "Incident",
    "IncidentStatus",
    "Outcome",
    "Severity",
    "Unit",
    "UnitStatus",
    "is_valid_severity",
    "sla_target_minutes",
    "validate_dispatch_order",
]

MIN_SEVERITY = 1
MAX_SEVERITY = 5
MAX_ID_LENGTH = 128


class Severity(IntEnum):
    """The urgency scale: 5 is a life-threatening emergency, 1 a routine call."""

    MINIMAL = 1
    LOW = 2
    MODERATE = 3
    HIGH = 4
    CRITICAL = 5


SLA_BY_SEVERITY: dict[int, int] = {5: 8, 4: 15, 3: 30, 2: 60, 1: 120}
"""Minutes from dispatch to the first unit on scene, per severity."""


def is_valid_severity(value: object) -> bool:
    """True when ``value`` is an int (not a bool) on the 1..5 scale."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (MIN_SEVERITY <= value <= MAX_SEVERITY)
    )


def sla_target_minutes(severity: int) -> int:
    """The SLA target for a severity.

    Raises:
        ValueError: the severity is not on the 1..5 scale.
    """
    if not is_valid_severity(severity):
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
    return SLA_BY_SEVERITY[severity]


class IncidentStatus(str, Enum):
    """Lifecycle of an incident as published on ``ionveil.incidents.<org>``."""

    OPENED = "opened"  # pending: no unit dispatched yet
    DISPATCHED = "dispatched"  # active: the SLA clock runs
    ARRIVED = "arrived"  # first unit on scene: the SLA clock stops
    CLOSED = "closed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once the incident no longer needs a unit (arrived, closed, cancelled)."""
        return self in (IncidentStatus.ARRIVED, IncidentStatus.CLOSED, IncidentStatus.CANCELLED)


class UnitStatus(str, Enum):
    """Whether a unit can take a dispatch."""

    AVAILABLE = "available"
    DISPATCHED = "dispatched"
    OUT_OF_SERVICE = "out_of_service"


@dataclass(frozen=True, slots=True)
class Incident:
    """An emergency that needs one or more units."""

    incident_id: str
    org_id: str
    priority: int
    status: IncidentStatus
    opened_at: datetime
    region: str = ""
    dispatched_at: datetime | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    """A response unit (ambulance, engine, patrol car) and where it is."""

    unit_id: str
    unit_type: str
    status: UnitStatus
    lat: float
    lon: float
    speed_kmh: float = 60.0


@dataclass(frozen=True, slots=True)
class DispatchOrder:
    """An instruction to send ``unit_ids`` to an incident."""

    order_id: str
    org_id: str
    incident_id: str
    priority: int
    unit_ids: tuple[str, ...]
    created_at: datetime
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Whether one dispatch met its SLA: what feeds a ``PolicyEngine``."""

    at: float  # epoch seconds (or virtual seconds in a simulation)
    success: bool
    source_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _check_id(name: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name}: must be a non-empty string")
    elif len(value) > MAX_ID_LENGTH:
        problems.append(f"{name}: at most {MAX_ID_LENGTH} characters, got {len(value)}")


def validate_dispatch_order(order: DispatchOrder) -> list[str]:
    """Every rule ``order`` breaks, one message per problem naming the field; empty when valid.

    Returning the whole list (rather than raising at the first problem) lets an operator fix a
    bad order in one go; ``ionveil.errors.ValidationError`` wraps the list where raising fits.
    """
    problems: list[str] = []
    _check_id("order_id", order.order_id, problems)
    _check_id("org_id", order.org_id, problems)
    _check_id("incident_id", order.incident_id, problems)
    if not is_valid_severity(order.priority):
        problems.append(f"priority: must be an integer from 1 to 5, got {order.priority!r}")
    if isinstance(order.unit_ids, str) or not isinstance(order.unit_ids, tuple | list):
        # A bare string would otherwise be read as one unit per character.
        problems.append("unit_ids: must be a list of unit ids")
    elif not order.unit_ids:
        problems.append("unit_ids: at least one unit is required")
    else:
        for unit_id in order.unit_ids:
            _check_id("unit_ids[]", unit_id, problems)
        ids = [u for u in order.unit_ids if isinstance(u, str)]
        if len(set(ids)) != len(ids):
            problems.append("unit_ids: a unit is listed more than once")
    if not isinstance(order.created_at, datetime):
        problems.append("created_at: must be a datetime")
    elif order.created_at.tzinfo is None:
        problems.append("created_at: must be timezone-aware")
    if not isinstance(order.notes, str):
        problems.append("notes: must be a string")
    elif len(order.notes) > 4096:
        problems.append("notes: at most 4096 characters")
    return problems


def finite_non_negative(name: str, value: object, problems: list[str]) -> None:
    """Append a problem unless ``value`` is a finite number >= 0 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{name}: must be a number, got {type(value).__name__}")
    elif not math.isfinite(value) or value < 0:
        problems.append(f"{name}: must be finite and >= 0, got {value!r}")

"""Values of the analytics service: one response-time record and its validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ionveil.errors import ValidationError
from ionveil.models import MAX_ID_LENGTH, SLA_BY_SEVERITY, is_valid_severity

__all__ = ["ResponseRecord", "check_range", "validate_record"]


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """How long the first unit took to reach one incident.

    Attributes:
        org_id: the org.
        incident_id: the incident (one record per incident and org: a repeat is ignored).
        priority: 1..5, the incident's priority.
        response_time_minutes: dispatch to first unit on scene, finite and >= 0.
        region: where (may be empty).
        recorded_at: when the response completed (aware; stored in UTC).
        reported_sla_met: the source's own verdict on the SLA (``DispatchEvent.sla_met``, what
            the live policy engine counted), or ``None`` to derive it from the priority.
    """

    org_id: str
    incident_id: str
    priority: int
    response_time_minutes: float
    region: str
    recorded_at: datetime
    reported_sla_met: bool | None = None

    @property
    def sla_met(self) -> bool:
        """The reported verdict when there is one, else whether the unit arrived within
        ``SLA_BY_SEVERITY[priority]`` minutes."""
        if self.reported_sla_met is not None:
            return self.reported_sla_met
        return self.response_time_minutes <= SLA_BY_SEVERITY[self.priority]


def validate_record(record: ResponseRecord, where: str = "") -> list[str]:
    """Every rule ``record`` breaks, each naming its field (prefixed with ``where``)."""
    problems: list[str] = []
    for name in ("org_id", "incident_id"):
        value = getattr(record, name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}{name}: must be a non-empty string")
        elif len(value) > MAX_ID_LENGTH:
            problems.append(f"{where}{name}: at most {MAX_ID_LENGTH} characters")
    if not is_valid_severity(record.priority):
        problems.append(f"{where}priority: must be an integer from 1 to 5, got {record.priority!r}")
    rt = record.response_time_minutes
    if isinstance(rt, bool) or not isinstance(rt, int | float) or not math.isfinite(rt) or rt < 0:
        problems.append(f"{where}response_time_minutes: must be finite and >= 0, got {rt!r}")
    if not isinstance(record.region, str):
        problems.append(f"{where}region: must be a string")
    elif len(record.region) > MAX_ID_LENGTH:
        problems.append(f"{where}region: at most {MAX_ID_LENGTH} characters")
    if record.reported_sla_met is not None and not isinstance(record.reported_sla_met, bool):
        problems.append(f"{where}reported_sla_met: must be a boolean or None")
    at = record.recorded_at
    if not isinstance(at, datetime):
        problems.append(f"{where}recorded_at: must be a datetime")
    elif at.tzinfo is None or at.utcoffset() is None:
        problems.append(f"{where}recorded_at: must be timezone-aware")
    return problems


def check_range(since: datetime | None, until: datetime | None) -> None:
    """Refuse naive bounds or an empty-by-construction range, naming the argument.

    Raises:
        ValidationError: listing each problem.
    """
    problems: list[str] = []
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        if not isinstance(value, datetime):
            problems.append(f"{name}: must be a datetime")
        elif value.tzinfo is None or value.utcoffset() is None:
            problems.append(f"{name}: must be timezone-aware")
    if not problems and since is not None and until is not None and until < since:
        problems.append("until: must not be before since")
    if problems:
        raise ValidationError(problems)

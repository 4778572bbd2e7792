"""SLA arithmetic for incidents: targets, remaining time, breaches and compliance rates.

The SLA of an incident is the time allowed from dispatch to the first unit on scene, fixed per
priority by ``ionveil.models.SLA_BY_SEVERITY`` (ARCHITECTURE.md, "Domain rules"). Everything here
is pure and synchronous: callers pass ``now`` explicitly, so the alerts service and the tests can
drive a virtual clock. Bad input raises ``ionveil.errors.ValidationError`` (a ``ValueError``)
naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ionveil.errors import ValidationError
from ionveil.models import SLA_BY_SEVERITY, is_valid_severity

__all__ = ["SLAMonitor", "SLARecord", "SLAStatus"]


@dataclass(frozen=True, slots=True)
class SLARecord:
    """One dispatched incident and, once known, when its first unit arrived."""

    incident_id: str
    priority: int
    dispatch_time: datetime
    arrival_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class SLAStatus:
    """Where one incident stands against its SLA at a moment ``now``.

    For an incident that has arrived, the clock stopped at ``arrival_time``: ``elapsed_minutes``
    and everything derived from it are measured up to the arrival, not up to ``now``.
    """

    incident_id: str
    priority: int
    target_minutes: int
    elapsed_minutes: float
    remaining_minutes: float
    remaining_pct: float
    breached: bool
    breach_magnitude: float
    dispatch_time: datetime
    evaluated_at: datetime
    arrival_time: datetime | None = None

    @property
    def arrived(self) -> bool:
        """True once a unit is on scene (the SLA clock has stopped)."""
        return self.arrival_time is not None


def _check_aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"{name}: must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{name}: must be timezone-aware, got a naive datetime")
    return value


class SLAMonitor:
    """Computes SLA figures for incidents from ``SLA_BY_SEVERITY``.

    Stateless apart from the (copied) target table, so one instance can be shared freely between
    tasks and threads.

    Args:
        targets: minutes allowed per priority; defaults to ``SLA_BY_SEVERITY``. Exposed so a
            simulation can test other targets; production uses the default.
    """

    def __init__(self, targets: dict[int, int] | None = None) -> None:
        table = dict(SLA_BY_SEVERITY if targets is None else targets)
        for priority, minutes in table.items():
            if not is_valid_severity(priority):
                raise ValidationError(f"targets: priority {priority!r} is not on the 1..5 scale")
            if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
                raise ValidationError(f"targets[{priority}]: must be a positive integer of minutes")
        self._targets = table

    def target_minutes(self, priority: int) -> int:
        """Minutes allowed from dispatch to first arrival for ``priority``.

        Raises:
            ValueError: ``priority`` is not an integer on the 1..5 scale (the message names it).
        """
        if not is_valid_severity(priority) or priority not in self._targets:
            raise ValidationError(f"priority: must be an integer from 1 to 5, got {priority!r}")
        return self._targets[priority]

    @staticmethod
    def elapsed_minutes(dispatch_time: datetime, now: datetime) -> float:
        """Minutes from ``dispatch_time`` to ``now`` (negative if ``now`` is before dispatch).

        Raises:
            ValueError: either datetime is naive.
        """
        start = _check_aware("dispatch_time", dispatch_time)
        end = _check_aware("now", now)
        return (end - start).total_seconds() / 60.0

    def remaining_minutes(self, priority: int, dispatch_time: datetime, now: datetime) -> float:
        """Minutes left before the SLA is breached; negative once it has been."""
        return self.target_minutes(priority) - self.elapsed_minutes(dispatch_time, now)

    def remaining_pct(self, priority: int, dispatch_time: datetime, now: datetime) -> float:
        """Share of the SLA left, in percent: 100 at dispatch, 0 at the target, negative beyond."""
        target = self.target_minutes(priority)
        return 100.0 * (target - self.elapsed_minutes(dispatch_time, now)) / target

    def is_breached(self, priority: int, dispatch_time: datetime, now: datetime) -> bool:
        """True when strictly more than the target has elapsed (arriving exactly on time is met)."""
        return self.elapsed_minutes(dispatch_time, now) > self.target_minutes(priority)

    def breach_magnitude(self, priority: int, dispatch_time: datetime, now: datetime) -> float:
        """Elapsed time as a multiple of the target: 1.0 at the target, 1.5 is 50 % over."""
        return self.elapsed_minutes(dispatch_time, now) / self.target_minutes(priority)

    def evaluate(
        self,
        incident_id: str,
        priority: int,
        dispatch_time: datetime,
        now: datetime,
        arrival_time: datetime | None = None,
    ) -> SLAStatus:
        """All SLA figures of one incident at ``now``.

        When ``arrival_time`` is given the clock stopped then: the figures are measured up to the
        arrival (an arrival later than ``now`` is refused, it has not happened yet).

        Raises:
            ValueError: invalid priority, naive datetimes, or an arrival before dispatch or after
                ``now``.
        """
        target = self.target_minutes(priority)
        _check_aware("dispatch_time", dispatch_time)
        _check_aware("now", now)
        stop = now
        if arrival_time is not None:
            _check_aware("arrival_time", arrival_time)
            if arrival_time < dispatch_time:
                raise ValidationError("arrival_time: must not be before dispatch_time")
            if arrival_time > now:
                raise ValidationError("arrival_time: must not be after now")
            stop = arrival_time
        elapsed = self.elapsed_minutes(dispatch_time, stop)
        return SLAStatus(
            incident_id=incident_id,
            priority=priority,
            target_minutes=target,
            elapsed_minutes=elapsed,
            remaining_minutes=target - elapsed,
            remaining_pct=100.0 * (target - elapsed) / target,
            breached=elapsed > target,
            breach_magnitude=elapsed / target,
            dispatch_time=dispatch_time,
            evaluated_at=now,
            arrival_time=arrival_time,
        )

    def compliance_rate(self, records: Iterable[SLARecord]) -> float:
        """Share of arrived incidents whose first unit arrived within the target.

        Only records with an ``arrival_time`` count: an incident still under way has neither met
        nor missed its SLA yet (the alerts service watches those). With no arrived record the
        rate is 1.0: nothing has been missed, and a dashboard shows "100 %" rather than an error.

        Raises:
            ValueError: a record has an invalid priority or naive datetimes.
        """
        arrived = 0
        met = 0
        for record in records:
            if record.arrival_time is None:
                # Still validate, so a bad record is reported whether or not it has arrived.
                self.target_minutes(record.priority)
                _check_aware("dispatch_time", record.dispatch_time)
                continue
            arrived += 1
            if not self.is_breached(record.priority, record.dispatch_time, record.arrival_time):
                met += 1
        return 1.0 if arrived == 0 else met / arrived

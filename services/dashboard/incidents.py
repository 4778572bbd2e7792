"""Active/pending dispatch counts from incident lifecycle events, and open alerts per org.

Incidents (``ionveil.incidents.<org>``): ``opened`` is pending, ``dispatched`` is active,
``arrived``/``closed``/``cancelled`` are neither. Updates may arrive out of order, so the one
with the latest ``timestamp`` wins (on a tie, the later lifecycle stage wins); finished
incidents are remembered until retention ends so a late ``opened`` cannot revive them.

Alerts (``ionveil.alerts.<org>.<severity>``): every message is the whole alert after a state
change; an alert is open while its status is not ``resolved``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ionveil.errors import ValidationError
from services.dashboard._validate import parse_time

__all__ = ["MAX_OPEN_ALERTS", "AlertBook", "IncidentTracker"]

_STAGE = {"opened": 0, "dispatched": 1, "arrived": 2, "closed": 3, "cancelled": 3}
MAX_OPEN_ALERTS = 500
"""Open alerts kept per org (the oldest are dropped beyond this; a dashboard shows the top)."""


class IncidentTracker:
    """Per-org incident states, with running pending/active counts."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[str, float]] = {}
        self.pending = 0
        self.active = 0

    def apply(self, payload: Mapping[str, Any]) -> bool:
        """Apply one lifecycle event; returns whether it changed the state.

        Raises:
            ValidationError: missing ``incident_id``, unknown ``status`` or bad ``timestamp``.
        """
        incident_id = payload.get("incident_id")
        status = payload.get("status")
        if not isinstance(incident_id, str) or not incident_id or len(incident_id) > 128:
            raise ValidationError("incident_id: must be a non-empty string of <= 128 characters")
        if status not in _STAGE:
            raise ValidationError(f"status: must be one of {', '.join(_STAGE)}, got {status!r}")
        try:
            at = parse_time(payload.get("timestamp"))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        old = self.states.get(incident_id)
        if old is not None and (old[1], _STAGE[old[0]]) >= (at, _STAGE[status]):
            return False
        if old is not None:
            self._count(old[0], -1)
        self.states[incident_id] = (status, at)
        self._count(status, +1)
        return True

    def _count(self, status: str, delta: int) -> None:
        if status == "opened":
            self.pending += delta
        elif status == "dispatched":
            self.active += delta

    def evict(self, cutoff_s: float) -> None:
        """Forget finished incidents last updated before ``cutoff_s`` (open ones are kept)."""
        for key in [k for k, (s, at) in self.states.items() if _STAGE[s] >= 2 and at < cutoff_s]:
            del self.states[key]

    def to_wire(self) -> list[list[Any]]:
        """``[[incident_id, status, epoch_s], ...]``."""
        return [[k, s, at] for k, (s, at) in self.states.items()]

    @classmethod
    def from_wire(cls, rows: list[list[Any]]) -> IncidentTracker:
        """Rebuild from ``to_wire()`` output."""
        tracker = cls()
        for incident_id, status, at in rows:
            tracker.states[incident_id] = (status, float(at))
            tracker._count(status, +1)
        return tracker


class AlertBook:
    """The open alerts of one org, keyed by ``alert_id``."""

    def __init__(self) -> None:
        self.open: dict[str, dict[str, Any]] = {}

    def apply(self, alert: Mapping[str, Any]) -> bool:
        """Apply one alert state change; returns whether the open set changed.

        Raises:
            ValidationError: no ``alert_id`` or ``status``.
        """
        alert_id = alert.get("alert_id")
        status = alert.get("status")
        if not isinstance(alert_id, str) or not alert_id or len(alert_id) > 128:
            raise ValidationError("alert_id: must be a non-empty string of <= 128 characters")
        if not isinstance(status, str) or not status:
            raise ValidationError("status: must be a non-empty string")
        if status == "resolved":
            return self.open.pop(alert_id, None) is not None
        self.open.pop(alert_id, None)
        self.open[alert_id] = dict(alert)
        while len(self.open) > MAX_OPEN_ALERTS:
            del self.open[next(iter(self.open))]
        return True

    def list(self) -> list[dict[str, Any]]:
        """Open alerts, most severe first, then most recently changed first."""
        rank = {"emergency": 0, "critical": 1, "warning": 2, "info": 3}
        alerts = list(reversed(self.open.values()))
        return sorted(alerts, key=lambda a: rank.get(str(a.get("severity")), 4))

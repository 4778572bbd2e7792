"""Pure dispatch functions: which unit to send, which incident first, is there capacity.

Everything here is a function of its arguments (no clock, no I/O), so the dispatch rules can be
tested exhaustively and reused by the simulator and the workers alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ionveil.models import SLA_BY_SEVERITY, Incident, IncidentStatus, Unit, UnitStatus

__all__ = [
    "EARTH_RADIUS_KM",
    "RankedUnit",
    "capacity_shortfall",
    "eta_minutes",
    "haversine_km",
    "order_pending_incidents",
    "rank_units_by_eta",
]

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two WGS84 points in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def eta_minutes(distance_km: float, speed_kmh: float) -> float:
    """Minutes to cover ``distance_km`` at ``speed_kmh``.

    Raises:
        ValueError: negative distance or non-positive speed.
    """
    if distance_km < 0 or not math.isfinite(distance_km):
        raise ValueError(f"distance_km must be finite and >= 0, got {distance_km!r}")
    if speed_kmh <= 0 or not math.isfinite(speed_kmh):
        raise ValueError(f"speed_kmh must be finite and > 0, got {speed_kmh!r}")
    return distance_km / speed_kmh * 60.0


@dataclass(frozen=True, slots=True)
class RankedUnit:
    """A candidate unit with its distance and ETA to the incident."""

    unit: Unit
    distance_km: float
    eta_minutes: float


def rank_units_by_eta(
    units: Iterable[Unit],
    lat: float,
    lon: float,
    unit_type: str | None = None,
) -> list[RankedUnit]:
    """Available units (optionally of one type) ordered by ETA, ties broken by unit id."""
    ranked = []
    for unit in units:
        if unit.status is not UnitStatus.AVAILABLE:
            continue
        if unit_type is not None and unit.unit_type != unit_type:
            continue
        distance = haversine_km(unit.lat, unit.lon, lat, lon)
        ranked.append(RankedUnit(unit, distance, eta_minutes(distance, unit.speed_kmh)))
    ranked.sort(key=lambda r: (r.eta_minutes, r.unit.unit_id))
    return ranked


def order_pending_incidents(incidents: Iterable[Incident], now: datetime) -> list[Incident]:
    """Pending incidents, most urgent first.

    Urgency is the fraction of the SLA already used since the incident opened, so a priority-3
    call that has waited 25 of its 30 minutes goes before a fresh priority-5 call; ties go to the
    higher priority, then the older incident.
    """

    def used_fraction(incident: Incident) -> float:
        waited_min = max(0.0, (now - incident.opened_at).total_seconds() / 60.0)
        return waited_min / SLA_BY_SEVERITY[incident.priority]

    pending = [i for i in incidents if i.status is IncidentStatus.OPENED]
    return sorted(
        pending, key=lambda i: (-used_fraction(i), -i.priority, i.opened_at, i.incident_id)
    )


def capacity_shortfall(units: Sequence[Unit], pending_incidents: int) -> int:
    """How many pending incidents cannot get a unit now (0 when there is enough capacity)."""
    available = sum(1 for u in units if u.status is UnitStatus.AVAILABLE)
    return max(0, pending_incidents - available)

"""Pure dispatch functions: distances, ETAs, unit ranking, incident ordering, capacity."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionveil.dispatch import (
    EARTH_RADIUS_KM,
    capacity_shortfall,
    eta_minutes,
    haversine_km,
    order_pending_incidents,
    rank_units_by_eta,
)
from ionveil.models import Incident, IncidentStatus, Unit, UnitStatus

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

lat = st.floats(min_value=-90, max_value=90, allow_nan=False)
lon = st.floats(min_value=-180, max_value=180, allow_nan=False)


def unit(uid: str, la: float, lo: float, *, kind: str = "ambulance", speed: float = 60.0,
         status: UnitStatus = UnitStatus.AVAILABLE) -> Unit:  # fmt: skip
    return Unit(uid, kind, status, la, lo, speed)


def incident(iid: str, priority: int, waited_min: float,
             status: IncidentStatus = IncidentStatus.OPENED) -> Incident:  # fmt: skip
    return Incident(iid, "org1", priority, status, NOW - timedelta(minutes=waited_min))


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((0.0, 0.0), (0.0, 0.0), 0.0),
        ((0.0, 0.0), (0.0, 1.0), 2 * math.pi * EARTH_RADIUS_KM / 360),  # one degree of equator
        ((0.0, 0.0), (1.0, 0.0), 2 * math.pi * EARTH_RADIUS_KM / 360),  # one degree of meridian
        ((90.0, 0.0), (-90.0, 0.0), math.pi * EARTH_RADIUS_KM),  # pole to pole
        ((0.0, 0.0), (0.0, 180.0), math.pi * EARTH_RADIUS_KM),  # antipodes on the equator
    ],
)
def test_haversine_known_distances(
    a: tuple[float, float], b: tuple[float, float], km: float
) -> None:
    """Great-circle distances match hand-computed arcs of the mean Earth radius."""
    assert haversine_km(*a, *b) == pytest.approx(km, rel=1e-9, abs=1e-9)


def test_haversine_london_paris() -> None:
    """London to Paris is about 344 km (a well-known reference distance)."""
    assert haversine_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, abs=1.0)


@settings(deadline=None)
@given(lat, lon, lat, lon)
def test_haversine_is_a_symmetric_bounded_distance(
    la1: float, lo1: float, la2: float, lo2: float
) -> None:
    """Property: symmetric, non-negative and never more than half the circumference."""
    d = haversine_km(la1, lo1, la2, lo2)
    assert d == pytest.approx(haversine_km(la2, lo2, la1, lo1), abs=1e-6)
    assert 0.0 <= d <= math.pi * EARTH_RADIUS_KM + 1e-6


@pytest.mark.parametrize(("km", "kmh", "minutes"), [(0, 60, 0), (30, 60, 30), (10, 40, 15)])
def test_eta_minutes(km: float, kmh: float, minutes: float) -> None:
    """ETA is distance over speed, in minutes."""
    assert eta_minutes(km, kmh) == pytest.approx(minutes)


@pytest.mark.parametrize(
    ("km", "kmh", "field"),
    [(-1, 60, "distance_km"), (float("nan"), 60, "distance_km"), (1, 0, "speed_kmh"),
     (1, -5, "speed_kmh"), (1, float("inf"), "speed_kmh")],
)  # fmt: skip
def test_eta_minutes_refuses_impossible_inputs(km: float, kmh: float, field: str) -> None:
    """Negative or non-finite distances and non-positive speeds are ValueErrors naming them."""
    with pytest.raises(ValueError, match=field):
        eta_minutes(km, kmh)


def test_rank_units_by_eta_orders_available_units() -> None:
    """Only available units are ranked, nearest ETA first; a faster unit can beat a nearer one."""
    units = [
        unit("far", 0.0, 0.5),
        unit("near", 0.0, 0.1),
        unit("busy", 0.0, 0.0, status=UnitStatus.DISPATCHED),
        unit("broken", 0.0, 0.0, status=UnitStatus.OUT_OF_SERVICE),
        unit("fast", 0.0, 0.15, speed=120.0),
    ]
    ranked = rank_units_by_eta(units, 0.0, 0.0)
    assert [r.unit.unit_id for r in ranked] == ["fast", "near", "far"]
    assert ranked[1].distance_km == pytest.approx(haversine_km(0, 0.1, 0, 0))
    assert ranked[1].eta_minutes == pytest.approx(ranked[1].distance_km)  # 60 km/h: 1 km/min


def test_rank_units_filters_by_type_and_breaks_ties_by_id() -> None:
    """unit_type keeps one kind; equal ETAs are ordered by unit id."""
    units = [
        unit("b", 0.0, 0.1),
        unit("a", 0.0, -0.1),
        unit("engine", 0.0, 0.0, kind="engine"),
    ]
    assert [r.unit.unit_id for r in rank_units_by_eta(units, 0, 0, "ambulance")] == ["a", "b"]
    assert [r.unit.unit_id for r in rank_units_by_eta(units, 0, 0, "engine")] == ["engine"]
    assert rank_units_by_eta([], 0, 0) == []


def test_order_pending_incidents_by_share_of_sla_used() -> None:
    """Most urgent first: share of SLA used, then priority, then age; only pending ones."""
    incidents = [
        incident("p5-fresh", 5, 1),  # 1/8 used
        incident("p3-waited", 3, 25),  # 25/30 used
        incident("p4-half", 4, 7.5),  # 1/2 used
        incident("p2-half", 2, 30),  # 1/2 used, lower priority
        incident("active", 5, 100, IncidentStatus.DISPATCHED),
        incident("done", 5, 100, IncidentStatus.CLOSED),
    ]
    ordered = order_pending_incidents(incidents, NOW)
    assert [i.incident_id for i in ordered] == ["p3-waited", "p4-half", "p2-half", "p5-fresh"]


def test_order_pending_incidents_future_opened_counts_as_zero_wait() -> None:
    """An incident stamped slightly in the future (clock skew) counts as not waited at all."""
    ordered = order_pending_incidents([incident("skewed", 5, -2), incident("old", 5, 0)], NOW)
    assert [i.incident_id for i in ordered] == ["old", "skewed"]


@pytest.mark.parametrize(("available", "pending", "short"), [(3, 2, 0), (3, 3, 0), (1, 4, 3),
                                                            (0, 0, 0)])  # fmt: skip
def test_capacity_shortfall(available: int, pending: int, short: int) -> None:
    """Shortfall is pending incidents beyond the available units, never negative."""
    units = [unit(f"u{i}", 0, 0) for i in range(available)]
    units.append(unit("busy", 0, 0, status=UnitStatus.DISPATCHED))
    assert capacity_shortfall(units, pending) == short

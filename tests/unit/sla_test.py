"""SLAMonitor: targets, remaining time, breaches and compliance rates."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionveil.errors import ValidationError
from ionveil.models import SLA_BY_SEVERITY
from services.compliance import SLAMonitor, SLARecord, SLAStatus

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def monitor() -> SLAMonitor:
    return SLAMonitor()


@pytest.mark.parametrize(("priority", "minutes"), sorted(SLA_BY_SEVERITY.items()))
def test_target_minutes_follow_the_table(monitor: SLAMonitor, priority: int, minutes: int) -> None:
    """Each priority's target is the one ARCHITECTURE.md fixes in SLA_BY_SEVERITY."""
    assert monitor.target_minutes(priority) == minutes


@pytest.mark.parametrize("bad", [0, 6, -1, True, 3.0, "3", None])
def test_invalid_priority_is_a_value_error_naming_it(monitor: SLAMonitor, bad: object) -> None:
    """A priority off the 1..5 integer scale raises a ValueError whose message names priority."""
    with pytest.raises(ValueError, match="priority") as info:
        monitor.target_minutes(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValidationError)
    with pytest.raises(ValueError, match="priority"):
        monitor.evaluate("i", bad, T0, at(1))  # type: ignore[arg-type]


def test_elapsed_minutes_measures_between_the_two_instants(monitor: SLAMonitor) -> None:
    """Elapsed time is in minutes, fractional, and works across time zones."""
    assert monitor.elapsed_minutes(T0, at(7.5)) == pytest.approx(7.5)
    other_zone = at(10).astimezone(timezone(timedelta(hours=-5)))
    assert monitor.elapsed_minutes(T0, other_zone) == pytest.approx(10)
    assert monitor.elapsed_minutes(T0, at(-2)) == pytest.approx(-2)


@pytest.mark.parametrize(
    ("priority", "elapsed", "remaining", "pct", "breached", "magnitude"),
    [
        (5, 0, 8, 100.0, False, 0.0),
        (5, 4, 4, 50.0, False, 0.5),
        (5, 8, 0, 0.0, False, 1.0),
        (5, 12, -4, -50.0, True, 1.5),
        (3, 45, -15, -50.0, True, 1.5),
        (1, 30, 90, 75.0, False, 0.25),
    ],
)
def test_remaining_breach_and_magnitude(
    monitor: SLAMonitor,
    priority: int,
    elapsed: float,
    remaining: float,
    pct: float,
    breached: bool,
    magnitude: float,
) -> None:
    """Remaining minutes/percent go negative past the target; breach is strictly over target."""
    now = at(elapsed)
    assert monitor.remaining_minutes(priority, T0, now) == pytest.approx(remaining)
    assert monitor.remaining_pct(priority, T0, now) == pytest.approx(pct)
    assert monitor.is_breached(priority, T0, now) is breached
    assert monitor.breach_magnitude(priority, T0, now) == pytest.approx(magnitude)


def test_evaluate_collects_every_figure(monitor: SLAMonitor) -> None:
    """evaluate() returns a frozen SLAStatus agreeing with the single-figure methods."""
    status = monitor.evaluate("inc-1", 4, T0, at(18))
    assert isinstance(status, SLAStatus)
    assert status.incident_id == "inc-1"
    assert status.target_minutes == 15
    assert status.elapsed_minutes == pytest.approx(18)
    assert status.remaining_minutes == pytest.approx(-3)
    assert status.remaining_pct == pytest.approx(-20)
    assert status.breached is True
    assert status.breach_magnitude == pytest.approx(1.2)
    assert status.arrived is False
    assert status.evaluated_at == at(18)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.breached = False  # type: ignore[misc]


def test_evaluate_stops_the_clock_at_arrival(monitor: SLAMonitor) -> None:
    """With an arrival time, figures are measured to the arrival, not to now."""
    status = monitor.evaluate("inc-2", 5, T0, at(60), arrival_time=at(6))
    assert status.arrived is True
    assert status.elapsed_minutes == pytest.approx(6)
    assert status.breached is False
    assert status.remaining_minutes == pytest.approx(2)


@pytest.mark.parametrize(
    ("arrival", "message"),
    [(at(-1), "arrival_time: must not be before"), (at(20), "arrival_time: must not be after")],
)
def test_evaluate_refuses_impossible_arrivals(
    monitor: SLAMonitor, arrival: datetime, message: str
) -> None:
    """An arrival before dispatch or after now is a ValidationError naming arrival_time."""
    with pytest.raises(ValidationError, match=message):
        monitor.evaluate("inc", 3, T0, at(10), arrival_time=arrival)


@pytest.mark.parametrize("field", ["dispatch_time", "now", "arrival_time"])
def test_naive_datetimes_are_rejected(monitor: SLAMonitor, field: str) -> None:
    """Naive datetimes are refused with an error naming the offending argument."""
    naive = datetime(2024, 5, 1, 12, 0)
    kwargs = {"dispatch_time": T0, "now": at(30), "arrival_time": at(5)}
    kwargs[field] = naive
    with pytest.raises(ValueError, match=f"{field}: must be timezone-aware"):
        monitor.evaluate("inc", 3, **kwargs)


def test_non_datetime_is_rejected(monitor: SLAMonitor) -> None:
    """A value that is not a datetime at all is refused with a message naming the field."""
    with pytest.raises(ValidationError, match="now: must be a datetime"):
        monitor.elapsed_minutes(T0, "2024-05-01")  # type: ignore[arg-type]


def test_compliance_rate_counts_only_arrived_records(monitor: SLAMonitor) -> None:
    """Share of arrived records within target; open incidents are ignored."""
    records = [
        SLARecord("a", 5, T0, at(8)),  # exactly on target: met
        SLARecord("b", 5, T0, at(9)),  # missed
        SLARecord("c", 3, T0, at(29)),  # met
        SLARecord("d", 1, T0, at(121)),  # missed
        SLARecord("e", 5, T0, None),  # under way: not counted
    ]
    assert monitor.compliance_rate(records) == pytest.approx(0.5)
    assert monitor.compliance_rate(iter(records)) == pytest.approx(0.5)


@pytest.mark.parametrize("records", [[], [SLARecord("x", 2, T0, None)]])
def test_compliance_rate_is_one_without_arrivals(
    monitor: SLAMonitor, records: list[SLARecord]
) -> None:
    """With no arrived record nothing was missed: the rate is 1.0."""
    assert monitor.compliance_rate(records) == 1.0


def test_compliance_rate_validates_open_records(monitor: SLAMonitor) -> None:
    """A bad record raises even when it has not arrived yet."""
    with pytest.raises(ValidationError, match="priority"):
        monitor.compliance_rate([SLARecord("x", 9, T0, None)])


def test_custom_targets_and_their_validation() -> None:
    """A simulation may inject other targets; bad tables are refused naming the entry."""
    custom = SLAMonitor({5: 4, 4: 10, 3: 20, 2: 40, 1: 80})
    assert custom.target_minutes(5) == 4
    partial = SLAMonitor({5: 4})
    with pytest.raises(ValidationError, match="priority"):
        partial.target_minutes(4)
    with pytest.raises(ValidationError, match="targets: priority 7"):
        SLAMonitor({7: 3})
    with pytest.raises(ValidationError, match=r"targets\[5\]"):
        SLAMonitor({5: 0})


@settings(deadline=None)
@given(
    priority=st.integers(min_value=1, max_value=5),
    elapsed_s=st.integers(min_value=0, max_value=10 * 3600),
)
def test_figures_are_consistent(priority: int, elapsed_s: int) -> None:
    """Property: breached iff remaining < 0 iff magnitude > 1, and pct tracks remaining."""
    monitor = SLAMonitor()
    now = T0 + timedelta(seconds=elapsed_s)
    status = monitor.evaluate("p", priority, T0, now)
    assert status.breached == (status.remaining_minutes < 0) == (status.breach_magnitude > 1)
    assert status.remaining_pct == pytest.approx(
        100 * status.remaining_minutes / status.target_minutes
    )
    assert status.elapsed_minutes + status.remaining_minutes == pytest.approx(status.target_minutes)

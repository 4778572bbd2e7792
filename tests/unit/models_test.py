"""The domain values of ionveil.models: severity scale, SLA table and order validation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from ionveil.models import (
    MAX_ID_LENGTH,
    SLA_BY_SEVERITY,
    DispatchOrder,
    Incident,
    IncidentStatus,
    Outcome,
    Severity,
    finite_non_negative,
    is_valid_severity,
    sla_target_minutes,
    validate_dispatch_order,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def order(**overrides: object) -> DispatchOrder:
    fields: dict[str, object] = {
        "order_id": "o1",
        "org_id": "org1",
        "incident_id": "i1",
        "priority": 4,
        "unit_ids": ("u1", "u2"),
        "created_at": NOW,
    }
    fields.update(overrides)
    return DispatchOrder(**fields)  # type: ignore[arg-type]


def test_sla_table_is_the_architecture_one() -> None:
    """SLA_BY_SEVERITY is exactly the table ARCHITECTURE.md fixes."""
    assert SLA_BY_SEVERITY == {5: 8, 4: 15, 3: 30, 2: 60, 1: 120}


def test_severity_scale_runs_one_to_five() -> None:
    """Severity is 1 (minimal) to 5 (critical) and more urgent means a shorter SLA."""
    assert [int(s) for s in Severity] == [1, 2, 3, 4, 5]
    assert Severity.CRITICAL == 5 and Severity.MINIMAL == 1
    targets = [SLA_BY_SEVERITY[s] for s in sorted(Severity)]
    assert targets == sorted(targets, reverse=True)


@pytest.mark.parametrize(
    ("value", "valid"),
    [(1, True), (5, True), (Severity.HIGH, True), (0, False), (6, False), (True, False),
     (3.0, False), ("3", False), (None, False)],
)  # fmt: skip
def test_is_valid_severity(value: object, valid: bool) -> None:
    """Only ints 1..5 are severities; bools, floats and strings are not."""
    assert is_valid_severity(value) is valid


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_sla_target_minutes(severity: int) -> None:
    """sla_target_minutes looks the severity up in SLA_BY_SEVERITY."""
    assert sla_target_minutes(severity) == SLA_BY_SEVERITY[severity]


@pytest.mark.parametrize("bad", [0, 6, True, "5"])
def test_sla_target_minutes_refuses_bad_severity(bad: object) -> None:
    """A severity off the scale is a ValueError naming severity."""
    with pytest.raises(ValueError, match="severity"):
        sla_target_minutes(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (IncidentStatus.OPENED, False),
        (IncidentStatus.DISPATCHED, False),
        (IncidentStatus.ARRIVED, True),
        (IncidentStatus.CLOSED, True),
        (IncidentStatus.CANCELLED, True),
    ],
)
def test_incident_status_terminal(status: IncidentStatus, terminal: bool) -> None:
    """Arrived, closed and cancelled incidents no longer need a unit."""
    assert status.is_terminal is terminal
    assert IncidentStatus(status.value) is status


def test_valid_order_has_no_problems() -> None:
    """A well-formed order validates to an empty list."""
    assert validate_dispatch_order(order()) == []
    assert validate_dispatch_order(order(unit_ids=["u1"], notes="n" * 4096)) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"order_id": ""}, "order_id: must be a non-empty string"),
        ({"org_id": "  "}, "org_id: must be a non-empty string"),
        ({"incident_id": 7}, "incident_id: must be a non-empty string"),
        ({"order_id": "x" * (MAX_ID_LENGTH + 1)}, f"order_id: at most {MAX_ID_LENGTH}"),
        ({"priority": 0}, "priority: must be an integer from 1 to 5"),
        ({"priority": True}, "priority: must be an integer from 1 to 5"),
        ({"unit_ids": ()}, "unit_ids: at least one unit is required"),
        ({"unit_ids": ("u1", "")}, "unit_ids[]: must be a non-empty string"),
        ({"unit_ids": ("u1", "u1")}, "unit_ids: a unit is listed more than once"),
        ({"unit_ids": "u1"}, "unit_ids: must be a list of unit ids"),
        ({"unit_ids": None}, "unit_ids: must be a list of unit ids"),
        ({"unit_ids": (["u1"],)}, "unit_ids[]: must be a non-empty string"),
        ({"created_at": datetime(2024, 5, 1)}, "created_at: must be timezone-aware"),
        ({"created_at": "2024-05-01"}, "created_at: must be a datetime"),
        ({"notes": "n" * 4097}, "notes: at most 4096 characters"),
        ({"notes": None}, "notes: must be a string"),
    ],
)
def test_each_broken_rule_is_reported(overrides: dict[str, object], expected: str) -> None:
    """Each rule an order breaks is reported with its field named, without raising."""
    problems = validate_dispatch_order(order(**overrides))
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    """Several broken rules give several problems, so an operator can fix them in one go."""
    problems = validate_dispatch_order(
        order(order_id="", priority=9, unit_ids=(), created_at=datetime(2024, 5, 1))
    )
    assert [p.split(":")[0] for p in problems] == ["order_id", "priority", "unit_ids", "created_at"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, None),
        (2.5, None),
        (-1, "must be finite and >= 0"),
        (float("inf"), "must be finite and >= 0"),
        (float("nan"), "must be finite and >= 0"),
        (True, "must be a number"),
        ("3", "must be a number"),
    ],
)
def test_finite_non_negative(value: object, problem: str | None) -> None:
    """finite_non_negative appends a problem naming the field unless value is finite and >= 0."""
    problems: list[str] = []
    finite_non_negative("distance_km", value, problems)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(f"distance_km: {problem}")


def test_domain_dataclasses_are_frozen_values() -> None:
    """Incidents and orders are immutable; each Outcome gets its own details dict."""
    incident = Incident("i1", "org1", 5, IncidentStatus.OPENED, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        incident.priority = 1  # type: ignore[misc]
    a, b = Outcome(1.0, True), Outcome(2.0, False)
    assert a.details == {} and a.details is not b.details
    assert incident.dispatched_at is None and incident.region == ""

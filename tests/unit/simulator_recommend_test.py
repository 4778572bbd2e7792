"""Recommendation scoring and choice, the candidate sweep, and the plain-data forms."""

from __future__ import annotations

import pytest

from ionveil.errors import ValidationError
from services.simulator import (
    FailurePattern,
    PolicyScenario,
    PolicySimulator,
    Priorities,
    SimulationResult,
    SimulationStatus,
    sweep_scenarios,
)
from services.simulator.serde import (
    pattern_from_dict,
    pattern_from_spec,
    pattern_to_dict,
    result_from_dict,
    result_to_dict,
    scenario_from_dict,
    scenario_to_dict,
)

ORDER = ["normal", "watch", "restricted"]


def fake_result(
    name: str,
    compliance: float,
    delay_s: float,
    flaps: int,
    restrictive_share: float,
    *,
    threshold: int = 3,
    status: SimulationStatus = SimulationStatus.COMPLETED,
) -> SimulationResult:
    """A hand-made one-hour result with the given scores (one burst, so delay = its delay)."""
    return SimulationResult(
        simulation_id=f"id-{name}",
        scenario=PolicyScenario(name, ORDER, threshold, {"watch": 5, "restricted": 9}),
        failure_pattern=FailurePattern("p", []),
        policy_transitions=[],
        final_policy="normal",
        total_escalations=0,
        total_deescalations=0,
        time_in_each_policy={"normal": 3600 * (1 - restrictive_share)},
        sla_compliance_rate=compliance,
        status=status,
        metrics={
            "events_processed": 1000,
            "simulated_seconds": 3600.0,
            "restrictive_seconds": 3600 * restrictive_share,
            "detection_delay_total_s": delay_s,
            "bursts": 1,
            "bursts_detected": 1,
            "flaps": flaps,
            "flap_window_s": 300.0,
        },
        duration_seconds=3600,
    )


def test_recommendation_keeps_the_pareto_set_and_applies_the_priorities() -> None:
    """D is dominated by A; among A, B, C compliance ties A and B, B detects faster: B wins."""
    results = [
        fake_result("A", 0.950, 10.0, 0, 0.5),
        fake_result("B", 0.949, 2.0, 1, 0.3, threshold=2),
        fake_result("C", 0.900, 1.0, 0, 0.1),
        fake_result("D", 0.940, 12.0, 2, 0.6),
    ]
    rec = PolicySimulator().generate_recommendation(results)
    assert rec["recommended"]["scenario"] == "B"
    assert rec["suggested_escalation_threshold"] == 2
    assert rec["suggested_deescalation_thresholds"] == {"watch": 5, "restricted": 9}
    assert sorted(s["scenario"] for s in rec["frontier"]) == ["A", "B", "C"]
    assert {s["scenario"]: s["pareto_optimal"] for s in rec["scores"]}["D"] is False
    assert "'B'" in rec["reasoning"] and "Pareto-optimal" in rec["reasoning"]
    assert rec["priorities"]["order"][0] == "sla_compliance"


def test_strict_priorities_pick_the_most_compliant() -> None:
    """With zero tolerances the most compliant frontier member wins outright."""
    results = [fake_result("A", 0.950, 10.0, 0, 0.5), fake_result("B", 0.949, 2.0, 1, 0.3)]
    rec = PolicySimulator().generate_recommendation(results, priorities=Priorities(0.0, 0.0, 0.0))
    assert rec["recommended"]["scenario"] == "A"


def test_ties_fall_through_to_flapping_then_restrictive_time() -> None:
    """Equal compliance and delay: fewer flaps wins; then the least restrictive."""
    rec = PolicySimulator().generate_recommendation(
        [
            fake_result("X", 0.9, 1.0, 3, 0.1),
            fake_result("Y", 0.9, 1.0, 0, 0.4),
            fake_result("Z", 0.9, 1.0, 0, 0.2),
        ]
    )
    assert rec["recommended"]["scenario"] == "Z"


def test_results_of_one_scenario_over_several_patterns_are_pooled() -> None:
    """Two results of the same scenario count as one candidate with pooled scores."""
    rec = PolicySimulator().generate_recommendation(
        [fake_result("A", 0.8, 4.0, 1, 0.2), fake_result("A", 1.0, 0.0, 3, 0.4)]
    )
    (score,) = rec["scores"]
    assert score["results"] == 2 and score["sla_compliance"] == pytest.approx(0.9)
    assert score["detection_delay_s"] == 2.0 and score["flaps_per_hour"] == 2.0
    assert score["restrictive_share"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "results",
    [[], [fake_result("A", 0.9, 1.0, 0, 0.1, status=SimulationStatus.CANCELLED)]],
)
def test_recommendation_needs_a_completed_result(results) -> None:
    """No results, or none completed, is a ValidationError naming ``results``."""
    with pytest.raises(ValidationError, match="results"):
        PolicySimulator().generate_recommendation(results)


def test_flaps_are_recounted_for_a_different_window() -> None:
    """The flap window of the recommendation applies to the transitions themselves."""
    result = fake_result("A", 0.9, 1.0, 0, 0.1)
    result.policy_transitions = [
        {"from": "normal", "to": "watch", "timestamp": 0.0, "reason": "escalated: x"},
        {"from": "watch", "to": "normal", "timestamp": 500.0, "reason": "deescalated: y"},
    ]
    assert PolicySimulator().generate_recommendation([result])["scores"][0]["flaps_per_hour"] == 0
    wide = PolicySimulator(flap_window_s=600.0).generate_recommendation([result])
    assert wide["scores"][0]["flaps_per_hour"] == 1.0


# -- sweep ------------------------------------------------------------------------------------
def base() -> PolicyScenario:
    """The scenario the sweeps vary."""
    return PolicyScenario("base", ORDER, 3, {"watch": 10, "restricted": 20})


def test_sweep_is_the_full_grid_with_scaled_thresholds() -> None:
    """Thresholds x scales candidates, de-escalation thresholds scaled and rounded (>= 1)."""
    grid = sweep_scenarios(base(), [1, 4], [0.05, 1.5])
    assert [s.name for s in grid] == [
        "base/esc=1/deesc=x0.05",
        "base/esc=1/deesc=x1.5",
        "base/esc=4/deesc=x0.05",
        "base/esc=4/deesc=x1.5",
    ]
    assert grid[0].deescalation_thresholds == {"watch": 1, "restricted": 1}
    assert grid[1].deescalation_thresholds == {"watch": 15, "restricted": 30}
    assert grid[0].metadata == {"base": "base", "deescalation_scale": 0.05}


def test_sweep_defaults_and_deduplication() -> None:
    """Defaults: the base threshold +-2 (>= 1) x five scales; equal configurations once."""
    assert len(sweep_scenarios(base())) == 5 * 5
    tiny = PolicyScenario("t", ["a", "b"], 1, {"b": 1})
    assert len(sweep_scenarios(tiny, [1], [0.5, 1.0, 1.2])) == 1


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (([0], None), "escalation_thresholds"),
        (([], None), "escalation_thresholds"),
        ((None, [0.0]), "deescalation_scales"),
        ((None, []), "deescalation_scales"),
    ],
)
def test_sweep_rejects_bad_grids(args, field: str) -> None:
    """Thresholds below 1 and non-positive scales are rejected naming the field."""
    with pytest.raises(ValidationError, match=field):
        sweep_scenarios(base(), *args)


def test_sweep_rejects_an_invalid_base() -> None:
    """The base scenario itself is validated."""
    with pytest.raises(ValidationError, match=r"base\.policy_order"):
        sweep_scenarios(PolicyScenario("b", ["x"], 1, {}))


# -- plain-data forms ---------------------------------------------------------------------------
def test_result_round_trips_through_plain_data() -> None:
    """result_to_dict -> result_from_dict keeps everything but the pattern's events."""
    sim = PolicySimulator()
    pattern = FailurePattern("p", [(0, False), (1, False), (2, False), (9, True)], "d")
    result = sim.run_simulation(sim.create_simulation(base(), pattern, 10))
    back = result_from_dict(result_to_dict(result))
    assert back.policy_transitions == result.policy_transitions
    assert back.metrics == result.metrics and back.status is result.status
    assert back.failure_pattern.events == [] and back.failure_pattern.pattern_id == "p"
    full = result_to_dict(result, include_events=True)["failure_pattern"]
    assert pattern_from_dict(full) == pattern


def test_result_dict_can_truncate_transitions() -> None:
    """max_transitions keeps the first transitions and says how many there were."""
    result = fake_result("A", 0.9, 1.0, 0, 0.1)
    result.policy_transitions = [
        {"from": "a", "to": "b", "timestamp": i, "reason": "x"} for i in range(5)
    ]
    out = result_to_dict(result, max_transitions=2)
    assert len(out["policy_transitions"]) == 2
    assert out["transitions_total"] == 5 and out["transitions_truncated"] is True


def test_scenario_and_pattern_round_trip() -> None:
    """Scenario and pattern survive their plain forms (lists become tuples again)."""
    assert scenario_from_dict(scenario_to_dict(base())) == base()
    pattern = FailurePattern("p", [(3, True)], "x")
    assert pattern_from_dict(pattern_to_dict(pattern)) == pattern


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("nope", "scenario"),
        ({"name": "x"}, "scenario.policy_order"),
        ({"name": "x", "policy_order": "ab", "escalation_threshold": 1}, "scenario.policy_order"),
        (
            {
                "name": "x",
                "policy_order": [],
                "escalation_threshold": 1,
                "deescalation_thresholds": [],
                "metadata": 3,
            },
            "scenario.deescalation_thresholds",
        ),
    ],
)
def test_scenario_from_dict_names_bad_fields(data, field: str) -> None:
    """Missing or mistyped scenario fields fail naming the field."""
    with pytest.raises(ValidationError, match=field):
        scenario_from_dict(data)


@pytest.mark.parametrize(
    ("data", "field"),
    [({"events": []}, "pattern.pattern_id"), ({"pattern_id": "p", "events": 5}, "pattern.events")],
)
def test_pattern_from_dict_names_bad_fields(data, field: str) -> None:
    """A pattern needs an id and a list of events."""
    with pytest.raises(ValidationError, match=field):
        pattern_from_dict(data)


def test_result_from_dict_names_missing_fields() -> None:
    """A result missing a field or with a bad status is a ValidationError."""
    good = result_to_dict(fake_result("A", 0.9, 1.0, 0, 0.1))
    with pytest.raises(ValidationError, match="final_policy"):
        result_from_dict({k: v for k, v in good.items() if k != "final_policy"})
    with pytest.raises(ValidationError, match="result"):
        result_from_dict({**good, "status": "weird"})


def test_pattern_from_spec_generators_and_events() -> None:
    """A spec names a generator with parameters, or gives events."""
    made = pattern_from_spec(
        {
            "generator": "burst",
            "params": {"burst_size": 2, "burst_interval_seconds": 5, "duration_seconds": 10},
            "pattern_id": "mine",
        }
    )
    assert made.pattern_id == "mine" and sum(not ok for _, ok in made.events) == 4
    assert pattern_from_spec({"events": [[0, True]]}).events == [(0, True)]
    constant = pattern_from_spec(
        {"generator": "constant", "params": {"rate": 0.5, "duration_seconds": 20, "seed": 1}}
    )
    cascade = pattern_from_spec(
        {
            "generator": "cascade",
            "params": {
                "initial_rate": 0.1,
                "escalation_factor": 2.0,
                "recovery_after_seconds": 60,
                "duration_seconds": 120,
                "seed": 1,
            },
        }
    )
    assert len(constant.events) == 20 and len(cascade.events) == 120


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"generator": "zigzag"}, "pattern.generator"),
        ({"generator": "constant", "params": {"rate": 0.1}}, "pattern.params"),
        ({"generator": "constant", "params": {"rate": 2.0, "duration_seconds": 5}}, "rate"),
    ],
)
def test_pattern_from_spec_rejects_bad_specs(spec, field: str) -> None:
    """Unknown generators, missing parameters and bad values are named."""
    with pytest.raises(ValidationError, match=field):
        pattern_from_spec(spec)

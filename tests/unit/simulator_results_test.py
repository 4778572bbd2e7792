"""The simulator runs the real engine and its results add up: a differential test against a
live-style engine, isolation from production engines, and properties over random patterns."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ionveil.policy import DEFAULT_DEESCALATION_THRESHOLDS, PolicyEngine
from services.simulator import (
    FailurePattern,
    FailurePatternGenerator,
    PolicyScenario,
    PolicySimulator,
    SimulationStatus,
)

ORDER = ["normal", "watch", "restricted", "halted"]


def live_transitions(scenario: PolicyScenario, events: list[tuple[int, bool]]) -> list[tuple]:
    """What a live engine does when fed the same outcomes one ``record()`` at a time."""
    engine = PolicyEngine(
        scenario.policy_order,
        scenario.escalation_threshold,
        scenario.deescalation_thresholds,
    )
    moved = [engine.record(ok, at=float(at)) for at, ok in sorted(events, key=lambda e: e[0])]
    return [(t.from_policy, t.to_policy, t.timestamp, t.reason, t.sequence) for t in moved if t]


def as_tuples(result) -> list[tuple]:
    """A result's transitions in the live engine's tuple form."""
    return [
        (t["from"], t["to"], t["timestamp"], t["reason"], t["sequence"])
        for t in result.policy_transitions
    ]


def test_differential_simulator_equals_live_engine_one_record_at_a_time() -> None:
    """One event log through a live-style engine and through the simulator: same transitions."""
    pattern = FailurePatternGenerator.constant_failure_rate(0.3, 3600, 3.0, seed=5)
    scenario = PolicyScenario("live", ORDER, 3, {"watch": 4, "restricted": 5, "halted": 6})
    sim = PolicySimulator(chunk_size=777)  # chunk boundaries must not matter
    result = sim.run_simulation(sim.create_simulation(scenario, pattern, 3600))
    expected = live_transitions(scenario, pattern.events)
    assert len(expected) > 100
    assert as_tuples(result) == expected


def test_production_engine_untouched_by_any_number_of_simulations() -> None:
    """A production engine's state and the module defaults stay as they were."""
    production = PolicyEngine()
    for ok in (False, False, False, True, False):
        production.record(ok, at=1.0)
    before = production.snapshot()
    defaults_before = dict(DEFAULT_DEESCALATION_THRESHOLDS)
    sim = PolicySimulator(max_concurrent=4)
    pattern = FailurePatternGenerator.constant_failure_rate(0.5, 2_000, seed=9)
    for threshold in range(1, 31):
        scenario = PolicyScenario(f"s{threshold}", ORDER, threshold, {"watch": 1, "halted": 2})
        sim.run_simulation(sim.create_simulation(scenario, pattern, 2_000))
    assert production.snapshot() == before
    assert defaults_before == DEFAULT_DEESCALATION_THRESHOLDS


events_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=300), st.booleans()), max_size=400
)


@settings(max_examples=150, deadline=None)
@given(
    events=events_strategy,
    levels=st.integers(min_value=2, max_value=5),
    threshold=st.integers(min_value=1, max_value=6),
    streaks=st.lists(st.integers(min_value=1, max_value=8), min_size=5, max_size=5),
    drop=st.integers(min_value=0, max_value=4),
    duration=st.integers(min_value=1, max_value=400),
)
def test_results_add_up_over_random_patterns(
    events, levels, threshold, streaks, drop, duration
) -> None:
    """Time sums to the duration; transitions chain; counts, final policy and rate agree."""
    order = ORDER[: min(levels, 4)] + (["lockdown"] if levels == 5 else [])
    deesc = {p: streaks[i] for i, p in enumerate(order) if i and i != drop}
    scenario = PolicyScenario("prop", order, threshold, deesc)
    sim = PolicySimulator(chunk_size=37)
    result = sim.run_simulation(
        sim.create_simulation(scenario, FailurePattern("p", events), duration)
    )

    assert result.status is SimulationStatus.COMPLETED
    assert set(result.time_in_each_policy) == set(order)
    assert sum(result.time_in_each_policy.values()) == duration
    assert all(v >= 0 for v in result.time_in_each_policy.values())
    current = order[0]
    for t in result.policy_transitions:
        assert t["from"] == current and abs(order.index(t["to"]) - order.index(current)) == 1
        current = t["to"]
    assert result.final_policy == current
    ups = sum(order.index(t["to"]) > order.index(t["from"]) for t in result.policy_transitions)
    assert result.total_escalations == ups
    assert result.total_deescalations == len(result.policy_transitions) - ups
    assert 0.0 <= result.sla_compliance_rate <= 1.0
    kept = [e for e in events if e[0] <= duration]
    assert result.metrics["events_processed"] == len(kept)
    assert result.metrics["events_ignored"] == len(events) - len(kept)
    assert as_tuples(result) == live_transitions(scenario, kept)


def test_compliance_rewards_restriction_only_when_failures_are_frequent() -> None:
    """Restriction pays above a failure rate of c / (w + c) = 1/6 and costs below it."""
    sim = PolicySimulator()
    eager = PolicyScenario("eager", ["normal", "watch"], 1, {})  # escalates, never returns
    never = PolicyScenario("never", ["normal", "watch"], 10_000, {})
    rng = random.Random(3)
    for rate, eager_wins in ((0.4, True), (0.05, False)):
        events = [(t, rng.random() >= rate) for t in range(5_000)]
        pattern = FailurePattern(f"r{rate}", events)
        results = sim.compare_scenarios([eager, never], pattern)
        better = results["eager"].sla_compliance_rate > results["never"].sla_compliance_rate
        assert better is eager_wins, rate

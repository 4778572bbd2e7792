"""Unit tests of the policy simulator contract (seed Task 1): scenarios and validation,
pattern generators, runs with hand-computed results, concurrency and cancellation."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from ionveil.errors import ConflictError, NotFoundError, ValidationError
from services.simulator import (
    FailurePattern,
    FailurePatternGenerator,
    PolicyScenario,
    PolicySimulator,
    ScenarioBuilder,
    SimulationStatus,
    pattern_span_seconds,
    validate_duration,
    validate_pattern,
    validate_scenario,
)
from services.simulator._patterns import MAX_PATTERN_EVENTS, cascade_rate

F, S = False, True


def two_level(threshold: int = 2, streak: int = 2) -> PolicyScenario:
    """A two-policy scenario small enough to compute results by hand."""
    return PolicyScenario("two", ["normal", "watch"], threshold, {"watch": streak})


# -- scenarios and validation -----------------------------------------------------------------
def test_builder_builds_the_scenario_it_was_told() -> None:
    """The fluent builder sets order, thresholds and metadata and returns a PolicyScenario."""
    scenario = (
        ScenarioBuilder("tight")
        .with_policy_order(["a", "b", "c"])
        .with_escalation_threshold(2)
        .with_deescalation_threshold("b", 4)
        .with_deescalation_threshold("c", 8)
        .with_metadata(author="ops")
        .build()
    )
    assert scenario == PolicyScenario(
        "tight", ["a", "b", "c"], 2, {"b": 4, "c": 8}, {"author": "ops"}
    )


def test_builder_defaults_are_the_engine_defaults() -> None:
    """Without explicit thresholds the builder takes the engine's default ladder and streaks."""
    scenario = ScenarioBuilder("default").build()
    assert scenario.policy_order == ["normal", "watch", "restricted", "halted"]
    assert scenario.escalation_threshold == 3
    assert scenario.deescalation_thresholds == {"watch": 10, "restricted": 20, "halted": 30}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.with_policy_order(["only"]), "policy_order"),
        (lambda b: b.with_policy_order(["a", "a"]), "policy_order"),
        (lambda b: b.with_policy_order(["a", ""]), "policy_order"),
        (lambda b: b.with_escalation_threshold(0), "escalation_threshold"),
        (lambda b: b.with_escalation_threshold(True), "escalation_threshold"),
        (lambda b: b.with_deescalation_threshold("nowhere", 3), "deescalation_thresholds"),
        (lambda b: b.with_deescalation_threshold("watch", 0), "deescalation_thresholds"),
    ],
)
def test_builder_rejects_invalid_scenarios_naming_the_field(mutate, field: str) -> None:
    """Unknown/duplicate/too few policies and thresholds below 1 fail with the field named."""
    with pytest.raises(ValidationError) as info:
        mutate(ScenarioBuilder("bad")).build()
    assert any(p.startswith(field) for p in info.value.problems), info.value.problems


def test_validate_scenario_lists_every_problem() -> None:
    """validate_scenario is pure and returns all problems at once; empty for a valid one."""
    assert validate_scenario(two_level()) == []
    bad = PolicyScenario("", ["x"], 0, {"y": 0}, metadata=[])  # type: ignore[arg-type]
    fields = {p.split(":")[0].split("[")[0] for p in validate_scenario(bad)}
    assert fields == {
        "name",
        "policy_order",
        "escalation_threshold",
        "deescalation_thresholds",
        "metadata",
    }


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ([(-1, True)], "events[0].offset"),
        ([(0, True), (1.5, False)], "events[1].offset"),
        ([(True, True)], "events[0].offset"),
        ([(0, 1)], "events[0].is_success"),
        ([(0, True, 3)], "events[0]"),
        (["xy"], "events[0]"),
        ("not a list", "events"),
    ],
)
def test_validate_pattern_names_each_bad_event(events, field: str) -> None:
    """Negative or non-integer offsets, non-bool outcomes and malformed events are named."""
    problems = validate_pattern(FailurePattern("p", events))
    assert any(p.startswith(field) for p in problems), problems


def test_validate_pattern_caps_the_listed_problems() -> None:
    """A pattern full of bad events lists a few by index, then summarises the rest."""
    problems = validate_pattern(FailurePattern("p", [(-1, True)] * 100))
    assert len(problems) == 6 and problems[-1].startswith("events: further")


def test_validate_pattern_accepts_unsorted_and_empty_patterns() -> None:
    """Order is not a validation matter (the simulator sorts); an empty pattern is valid."""
    assert validate_pattern(FailurePattern("p", [(5, True), (1, False)])) == []
    assert validate_pattern(FailurePattern("p", [])) == []
    assert validate_pattern(FailurePattern("", [], description=3)) == [  # type: ignore[arg-type]
        "pattern_id: must be a non-empty string",
        "description: must be a string",
    ]


@pytest.mark.parametrize("duration", [0, -5, 1.5, True, "60", 10**12])
def test_validate_duration_rejects_non_positive_or_non_integer(duration) -> None:
    """The simulated duration must be a whole, positive, bounded number of seconds."""
    assert validate_duration(duration)[0].startswith("duration_seconds")
    with pytest.raises(ValidationError, match="duration_seconds"):
        PolicySimulator().create_simulation(two_level(), FailurePattern("p", []), duration)


def test_create_simulation_reports_all_problems_together() -> None:
    """A bad scenario, pattern and duration raise one ValidationError listing all three."""
    with pytest.raises(ValidationError) as info:
        PolicySimulator().create_simulation(
            PolicyScenario("s", ["a"], 1, {}), FailurePattern("p", [(-3, True)]), 0
        )
    joined = " ".join(info.value.problems)
    assert "policy_order" in joined and "events[0].offset" in joined and "duration" in joined


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrent": 0},
        {"max_concurrent": True},
        {"chunk_size": 0},
        {"mitigation_weight": 2.0},
        {"restriction_cost": -0.1},
        {"burst_min_failures": 0},
        {"flap_window_s": -1.0},
    ],
)
def test_simulator_rejects_bad_settings(kwargs) -> None:
    """Simulator settings are validated with the setting named."""
    with pytest.raises(ValidationError, match=next(iter(kwargs))):
        PolicySimulator(**kwargs)


# -- generators -------------------------------------------------------------------------------
def test_constant_rate_is_deterministic_and_shaped() -> None:
    """Same seed -> same pattern; one event per second; failure share close to the rate."""
    gen = FailurePatternGenerator.constant_failure_rate
    a, b, c = gen(0.3, 10_000, seed=7), gen(0.3, 10_000, seed=7), gen(0.3, 10_000, seed=8)
    assert a.events == b.events and a.events != c.events
    assert [o for o, _ in a.events] == list(range(10_000))
    share = sum(1 for _, ok in a.events if not ok) / len(a.events)
    assert abs(share - 0.3) < 0.03
    assert validate_pattern(a) == []


@pytest.mark.parametrize(("eps", "per_offset"), [(4.0, 4), (1.0, 1)])
def test_constant_rate_several_events_share_an_offset(eps: float, per_offset: int) -> None:
    """With events_per_second > 1, offsets are whole seconds shared by several events."""
    pattern = FailurePatternGenerator.constant_failure_rate(0.0, 10, eps, seed=1)
    counts = Counter(o for o, _ in pattern.events)
    assert len(pattern.events) == 10 * per_offset and set(counts.values()) == {per_offset}
    assert all(ok for _, ok in pattern.events)


def test_constant_rate_below_one_event_per_second_spaces_events() -> None:
    """At 0.5 events/s events fall on every other second; rate 1.0 fails every event."""
    pattern = FailurePatternGenerator.constant_failure_rate(1.0, 10, 0.5, seed=1)
    assert pattern.events == [(t, False) for t in range(0, 10, 2)]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1.5, 60), "rate"),
        ((-0.1, 60), "rate"),
        ((0.1, 0), "duration_seconds"),
        ((0.1, 60, 0.0), "events_per_second"),
        ((0.1, 60, float("nan")), "events_per_second"),
        ((0.1, MAX_PATTERN_EVENTS, 2.0), "events_per_second"),
    ],
)
def test_constant_rate_rejects_bad_parameters(args, field: str) -> None:
    """Rates outside [0, 1], non-positive durations or rates of events fail naming the field."""
    with pytest.raises(ValidationError, match=field):
        FailurePatternGenerator.constant_failure_rate(*args)


def test_generators_reject_a_non_integer_seed() -> None:
    """The seed must be an integer (or None)."""
    with pytest.raises(ValidationError, match="seed"):
        FailurePatternGenerator.constant_failure_rate(0.1, 10, seed="x")  # type: ignore[arg-type]


def test_burst_failure_places_bursts_at_interval_starts() -> None:
    """Without a seed, each interval starts with burst_size failures; the rest succeed."""
    pattern = FailurePatternGenerator.burst_failure(3, 10, 30)
    failures = [o for o, ok in pattern.events if not ok]
    assert failures == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert len(pattern.events) == 30


def test_burst_failure_with_seed_jitters_within_the_interval() -> None:
    """With a seed, every interval still holds exactly one run of burst_size failures."""
    gen = FailurePatternGenerator.burst_failure
    a, b = gen(4, 20, 200, seed=3), gen(4, 20, 200, seed=3)
    assert a.events == b.events and a.events != gen(4, 20, 200).events
    for start in range(0, 200, 20):
        window = "".join("F" if not ok else "S" for _, ok in a.events[start : start + 20])
        assert window.count("F") == 4 and "FFFF" in window


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 10, 60), "burst_size"),
        ((2, 0, 60), "burst_interval_seconds"),
        ((2, 10, -1), "duration_seconds"),
    ],
)
def test_burst_failure_rejects_bad_parameters(args, field: str) -> None:
    """Burst size, interval and duration must be integers >= 1."""
    with pytest.raises(ValidationError, match=field):
        FailurePatternGenerator.burst_failure(*args)


def test_cascade_rate_grows_then_recovers() -> None:
    """Hand-computed rates: x2 per 60 s interval, capped at 1, halving back after recovery."""
    rate = [cascade_rate(t, 0.1, 2.0, 180) for t in (0, 60, 120, 179, 180, 240, 300, 600)]
    assert rate == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4, 0.2, 0.1, 0.1])
    assert cascade_rate(600, 0.3, 3.0, 900) == 1.0


def test_cascading_failure_shape_and_determinism() -> None:
    """Failure share rises towards the recovery point and falls after it; seeded = repeatable."""
    gen = FailurePatternGenerator.cascading_failure
    pattern = gen(0.05, 2.0, 240, 600, events_per_second=20.0, seed=11)
    assert pattern.events == gen(0.05, 2.0, 240, 600, events_per_second=20.0, seed=11).events

    def share(lo: int, hi: int) -> float:
        window = [ok for o, ok in pattern.events if lo <= o < hi]
        return sum(1 for ok in window if not ok) / len(window)

    early, peak, late = share(0, 60), share(180, 240), share(480, 600)
    assert early < peak and late < peak
    assert abs(peak - 0.4) < 0.06


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1.2, 2.0, 60, 600), "initial_rate"),
        ((0.1, 0.5, 60, 600), "escalation_factor"),
        ((0.1, 2.0, -1, 600), "recovery_after_seconds"),
        ((0.1, 2.0, 60, 0), "duration_seconds"),
    ],
)
def test_cascading_failure_rejects_bad_parameters(args, field: str) -> None:
    """Rates outside [0, 1], shrinking factors and negative times fail naming the field."""
    with pytest.raises(ValidationError, match=field):
        FailurePatternGenerator.cascading_failure(*args)


# -- execution with known inputs --------------------------------------------------------------
def test_run_matches_hand_computed_results() -> None:
    """F F F S S F on normal/watch (threshold 2, streak 2) over 10 s, computed by hand.

    Event 2 escalates at t=1, event 5 de-escalates at t=4. Under watch: events 3-5 (1 failure,
    2 successes); under normal: events 1, 2, 6 (3 failures). Compliance = (0 + 0.9 * 2 + 0.5 *
    1) / 6; time normal = 1 + 6, watch = 3.
    """
    sim = PolicySimulator()
    pattern = FailurePattern("p", [(0, F), (1, F), (2, F), (3, S), (4, S), (5, F)])
    result = sim.run_simulation(sim.create_simulation(two_level(), pattern, 10))
    assert result.status is SimulationStatus.COMPLETED
    assert [
        (t["from"], t["to"], t["timestamp"], t["sequence"]) for t in result.policy_transitions
    ] == [("normal", "watch", 1.0, 2), ("watch", "normal", 4.0, 5)]
    assert result.policy_transitions[0]["reason"] == "escalated: failure_burst 2 >= 2"
    assert result.time_in_each_policy == {"normal": 7.0, "watch": 3.0}
    assert result.sla_compliance_rate == pytest.approx((0.9 * 2 + 0.5 * 1) / 6)
    assert (result.total_escalations, result.total_deescalations) == (1, 1)
    assert result.final_policy == "normal"
    m = result.metrics
    assert (m["mitigated_failures"], m["restricted_successes"], m["flaps"]) == (1, 2, 1)
    assert (m["bursts"], m["bursts_detected"], m["mean_detection_delay_s"]) == (1, 1, 1.0)
    assert m["per_policy"] == {
        "normal": {"events": 3, "failures": 3},
        "watch": {"events": 3, "failures": 1},
    }


def test_events_past_duration_are_ignored_and_unsorted_events_sorted() -> None:
    """Events are sorted stably by offset; those after duration_seconds are not processed."""
    sim = PolicySimulator()
    pattern = FailurePattern("p", [(3, F), (1, F), (50, F), (2, F)])
    result = sim.run_simulation(sim.create_simulation(two_level(threshold=3), pattern, 10))
    assert result.metrics["events_processed"] == 3 and result.metrics["events_ignored"] == 1
    assert [t["timestamp"] for t in result.policy_transitions] == [3.0]
    assert result.time_in_each_policy == {"normal": 3.0, "watch": 7.0}


def test_undetected_burst_counts_the_rest_of_the_run() -> None:
    """A burst shorter than the escalation threshold is undetected: delay = end - onset."""
    sim = PolicySimulator(burst_min_failures=3)
    pattern = FailurePattern("p", [(2, F), (3, F), (4, F), (5, S)])
    result = sim.run_simulation(sim.create_simulation(two_level(threshold=5), pattern, 20))
    assert result.metrics["bursts"] == 1 and result.metrics["bursts_detected"] == 0
    assert result.metrics["mean_detection_delay_s"] == 18.0
    assert result.sla_compliance_rate == 0.25 and result.final_policy == "normal"


def test_burst_at_the_top_policy_counts_as_detected_at_onset() -> None:
    """Already at the most restrictive policy, a new burst needs no escalation: delay 0."""
    sim = PolicySimulator(burst_min_failures=2)
    events = [(0, F), (1, F), (2, S), (3, F), (4, F)]
    result = sim.run_simulation(
        sim.create_simulation(two_level(threshold=2, streak=99), FailurePattern("p", events), 5)
    )
    assert result.metrics["bursts"] == 2 and result.metrics["bursts_detected"] == 2
    assert result.metrics["detection_delay_total_s"] == 1.0


def test_empty_pattern_gives_a_quiet_full_compliance_run() -> None:
    """No events: no transitions, all time in the first policy, compliance 1.0."""
    sim = PolicySimulator()
    result = sim.run_simulation(sim.create_simulation(two_level(), FailurePattern("p", []), 60))
    assert result.time_in_each_policy == {"normal": 60.0, "watch": 0.0}
    assert result.sla_compliance_rate == 1.0 and result.policy_transitions == []
    assert pattern_span_seconds(FailurePattern("p", [])) == 1


def test_rerunning_a_finished_simulation_returns_its_result() -> None:
    """run_simulation on a completed id returns the stored result (runs are deterministic)."""
    sim = PolicySimulator()
    sim_id = sim.create_simulation(two_level(), FailurePattern("p", [(0, F)]), 5)
    first = sim.run_simulation(sim_id)
    assert sim.run_simulation(sim_id) is first and sim.get_result(sim_id) is first


def test_unknown_ids_raise_key_error() -> None:
    """Status, run, cancel, result and discard of an unknown id raise KeyError."""
    sim = PolicySimulator()
    for call in (
        sim.get_simulation_status,
        sim.run_simulation,
        sim.cancel_simulation,
        sim.get_result,
        sim.discard,
    ):
        with pytest.raises(KeyError):
            call("nope")
    assert issubclass(NotFoundError, KeyError)


def test_explicit_simulation_ids_are_unique() -> None:
    """A caller-chosen id is used as given; reusing it is a conflict; a bad one is invalid."""
    sim = PolicySimulator()
    assert sim.create_simulation(two_level(), FailurePattern("p", []), simulation_id="x") == "x"
    with pytest.raises(ConflictError):
        sim.create_simulation(two_level(), FailurePattern("p", []), simulation_id="x")
    with pytest.raises(ValidationError, match="simulation_id"):
        sim.create_simulation(two_level(), FailurePattern("p", []), simulation_id="")


def test_a_failing_run_is_a_failed_result_not_a_crash() -> None:
    """An error inside a run (here a raising progress callback) yields status FAILED."""
    sim = PolicySimulator()
    sim_id = sim.create_simulation(two_level(), FailurePattern("p", [(0, F)]), 5)

    def boom(done: int, total: int) -> None:
        raise ValueError("progress sink broke")

    result = sim.run_simulation(sim_id, progress=boom)
    assert result.status is SimulationStatus.FAILED
    assert result.error_message == "ValueError: progress sink broke"
    assert sim.cancel_simulation(sim_id) is False
    sim.discard(sim_id)
    with pytest.raises(KeyError):
        sim.get_simulation_status(sim_id)


# -- concurrency and cancellation ------------------------------------------------------------
def test_twenty_five_threads_never_exceed_max_concurrent() -> None:
    """25 simulations started from 25 threads: at most max_concurrent run at any moment."""
    sim = PolicySimulator(max_concurrent=3, chunk_size=500)
    pattern = FailurePatternGenerator.constant_failure_rate(0.3, 5_000, seed=2)
    ids = [sim.create_simulation(two_level(), pattern, 5_000) for _ in range(25)]
    observed: list[int] = []
    lock = threading.Lock()

    def spy(done: int, total: int) -> None:
        running = sum(sim.get_simulation_status(i) is SimulationStatus.RUNNING for i in ids)
        with lock:
            observed.append(running)
        threading.Event().wait(0.002)  # give the other threads a chance to pile up

    results: dict[str, SimulationStatus] = {}
    threads = [
        threading.Thread(
            target=lambda i=i: results.__setitem__(i, sim.run_simulation(i, progress=spy).status)
        )
        for i in ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert set(results.values()) == {SimulationStatus.COMPLETED} and len(results) == 25
    assert max(observed) <= 3 and sim.peak_running <= 3
    assert sim.peak_running >= 2  # the runs really did overlap
    assert sim.running_count == 0


def test_run_on_a_running_simulation_raises_runtime_error() -> None:
    """A second run_simulation of a simulation in progress raises RuntimeError."""
    sim = PolicySimulator(chunk_size=10)
    sim_id = sim.create_simulation(
        two_level(), FailurePattern("p", [(i, S) for i in range(50)]), 60
    )
    errors: list[Exception] = []

    def again(done: int, total: int) -> None:
        if not errors:
            with pytest.raises(RuntimeError) as info:
                sim.run_simulation(sim_id)
            errors.append(info.value)

    assert sim.run_simulation(sim_id, progress=again).status is SimulationStatus.COMPLETED
    assert len(errors) == 1


def test_cancel_pending_simulation() -> None:
    """Cancelling a pending simulation marks it cancelled; running it returns that outcome."""
    sim = PolicySimulator()
    sim_id = sim.create_simulation(two_level(), FailurePattern("p", [(0, F)]), 5)
    assert sim.cancel_simulation(sim_id) is True
    assert sim.get_simulation_status(sim_id) is SimulationStatus.CANCELLED
    result = sim.run_simulation(sim_id)
    assert result.status is SimulationStatus.CANCELLED and result.policy_transitions == []
    assert sim.cancel_simulation(sim_id) is True  # still cancelled: idempotent


def test_cancel_running_simulation_stops_at_the_next_chunk() -> None:
    """A cancel from another thread stops the run at the next chunk boundary."""
    sim = PolicySimulator(chunk_size=1_000)
    pattern = FailurePatternGenerator.constant_failure_rate(0.2, 100_000, seed=4)
    sim_id = sim.create_simulation(two_level(), pattern, 100_000)
    first_chunk, cancelled = threading.Event(), threading.Event()
    out: list = []

    def progress(done: int, total: int) -> None:
        first_chunk.set()
        cancelled.wait(10)

    worker = threading.Thread(
        target=lambda: out.append(sim.run_simulation(sim_id, progress=progress))
    )
    worker.start()
    assert first_chunk.wait(10)
    assert sim.get_simulation_status(sim_id) is SimulationStatus.RUNNING
    assert sim.cancel_simulation(sim_id) is True
    cancelled.set()
    worker.join(10)
    result = out[0]
    assert result.status is SimulationStatus.CANCELLED
    assert result.metrics["events_processed"] == 1_000
    assert result.error_message == "cancelled after 1000 events"
    assert sum(result.time_in_each_policy.values()) == pattern.events[999][0]
    assert sim.cancel_simulation(sim_id) is True


def test_cancel_after_the_last_chunk_still_cancels() -> None:
    """A cancel that arrives during the final chunk ends the run cancelled, not completed."""
    sim = PolicySimulator(chunk_size=100)
    sim_id = sim.create_simulation(two_level(), FailurePattern("p", [(0, F), (1, S)]), 5)
    result = sim.run_simulation(sim_id, progress=lambda d, t: sim.cancel_simulation(sim_id))
    assert result.status is SimulationStatus.CANCELLED


def test_completed_simulation_cannot_be_cancelled() -> None:
    """cancel_simulation returns False once a simulation completed."""
    sim = PolicySimulator()
    sim_id = sim.create_simulation(two_level(), FailurePattern("p", []), 5)
    sim.run_simulation(sim_id)
    assert sim.cancel_simulation(sim_id) is False
    assert sim.get_simulation_status(sim_id) is SimulationStatus.COMPLETED


def test_discard_refuses_a_running_simulation() -> None:
    """A simulation in progress cannot be discarded (ConflictError, a RuntimeError)."""
    sim = PolicySimulator(chunk_size=1)
    sim_id = sim.create_simulation(two_level(), FailurePattern("p", [(0, S), (1, S)]), 5)
    seen: list[type] = []

    def progress(done: int, total: int) -> None:
        try:
            sim.discard(sim_id)
        except RuntimeError as exc:
            seen.append(type(exc))

    sim.run_simulation(sim_id, progress=progress)
    assert seen == [ConflictError, ConflictError]

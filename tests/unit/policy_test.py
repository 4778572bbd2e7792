"""PolicyEngine: the escalation rule of ARCHITECTURE.md, thread safety and persistence."""

from __future__ import annotations

import threading

import pytest

from ionveil.errors import ValidationError
from ionveil.policy import PolicyConfig, PolicyEngine, PolicyTransition


def make_engine(**kw: object) -> PolicyEngine:
    kw.setdefault("escalation_threshold", 3)
    kw.setdefault("deescalation_thresholds", {"watch": 2, "restricted": 2, "halted": 2})
    return PolicyEngine(clock=lambda: 100.0, **kw)  # type: ignore[arg-type]


def test_failures_up_to_threshold_escalate_one_level_and_zero_counters() -> None:
    """Three failures move normal to watch; counters restart from zero after the move."""
    engine = make_engine()
    assert engine.record_failure() is None
    assert engine.record_failure() is None
    moved = engine.record_failure()
    assert moved is not None
    assert (moved.from_policy, moved.to_policy, moved.timestamp) == ("normal", "watch", 100.0)
    assert moved.is_escalation
    assert engine.current_policy == "watch"
    assert (engine.failure_burst, engine.success_streak) == (0, 0)


def test_success_breaks_a_burst() -> None:
    """A success in between resets the failure burst, so no escalation happens."""
    engine = make_engine()
    for ok in (False, False, True, False, False):
        engine.record(ok)
    assert engine.current_policy == "normal"
    assert engine.failure_burst == 2


def test_deescalates_after_streak_and_never_below_first() -> None:
    """A success streak at the threshold moves down one level; at the first policy it stays."""
    engine = make_engine()
    for _ in range(3):
        engine.record_failure(at=1.0)
    moves = engine.record_many([(2.0, True), (3.0, True), (4.0, True), (5.0, True)])
    assert [(m.from_policy, m.to_policy) for m in moves] == [("watch", "normal")]
    assert not moves[0].is_escalation
    assert engine.current_policy == "normal"
    assert engine.success_streak == 2


def test_stays_at_top_and_keeps_counting() -> None:
    """At the last policy more failures do not move the engine, the burst keeps growing."""
    engine = make_engine(deescalation_thresholds={})
    engine.record_many([(float(i), False) for i in range(20)])
    assert engine.current_policy == "halted"
    assert engine.failure_burst == 11
    assert len(engine.history) == 3


def test_policy_without_deescalation_threshold_never_deescalates() -> None:
    """An empty threshold map means successes never bring the engine down."""
    engine = make_engine(deescalation_thresholds={})
    engine.record_many([(0.0, False)] * 3 + [(1.0, True)] * 100)
    assert engine.current_policy == "watch"


def test_sequence_numbers_point_at_the_triggering_outcome() -> None:
    """``sequence`` is the 1-based count of outcomes when the move happened."""
    engine = make_engine()
    moves = engine.record_many([(0.0, True), (1.0, False), (2.0, False), (3.0, False)])
    assert moves[0].sequence == 4
    assert engine.outcomes_recorded == 4


@pytest.mark.parametrize(
    ("order", "threshold", "deesc", "fragment"),
    [
        (["only"], 3, {}, "at least two"),
        (["a", "a"], 3, {}, "duplicate"),
        (["a", "b"], 0, {}, "escalation_threshold"),
        (["a", "b"], True, {}, "escalation_threshold"),
        (["a", "b"], 2, {"c": 1}, "unknown policy"),
        (["a", "b"], 2, {"b": 0}, "deescalation_thresholds"),
        (["a", ""], 2, {}, "non-empty"),
    ],
)
def test_invalid_configuration_names_the_field(
    order: list[str], threshold: object, deesc: dict[str, int], fragment: str
) -> None:
    """Each invalid configuration raises a ValidationError whose message names the problem."""
    with pytest.raises(ValidationError, match=fragment):
        PolicyEngine(order, threshold, deesc)  # type: ignore[arg-type]


def test_snapshot_restore_round_trip() -> None:
    """A restored engine continues exactly where the original stopped."""
    engine = make_engine()
    engine.record_many([(1.0, False)] * 4 + [(2.0, True)])
    clone = PolicyEngine.from_snapshot(engine.snapshot())
    assert clone.snapshot() == engine.snapshot()
    assert clone.current_policy == "watch"
    assert clone.record(True, at=3.0) == engine.record(True, at=3.0)


def test_restore_rejects_foreign_policy() -> None:
    """A snapshot naming a policy not on the ladder is refused."""
    with pytest.raises(ValidationError, match="current_policy"):
        make_engine().restore({"current_policy": "panic"})
    with pytest.raises(ValidationError, match="failure_burst"):
        make_engine().restore({"current_policy": "watch", "failure_burst": -1})


def test_reset_and_transition_dict_round_trip() -> None:
    """reset() returns to the first policy; transitions survive as_dict/from_dict."""
    engine = make_engine()
    engine.record_many([(5.0, False)] * 3)
    t = engine.history[0]
    assert PolicyTransition.from_dict(t.as_dict()) == t
    assert set(t.as_dict()) >= {"from", "to", "timestamp", "reason"}
    engine.reset()
    assert engine.current_policy == "normal"


def test_default_config_and_config_object() -> None:
    """Defaults follow ARCHITECTURE.md; PolicyConfig validates and serialises."""
    engine = PolicyEngine()
    assert engine.policy_order == ("normal", "watch", "restricted", "halted")
    cfg = PolicyConfig()
    assert cfg.as_dict()["escalation_threshold"] == 3
    with pytest.raises(ValidationError):
        PolicyConfig(("a",), 1, {})


def test_concurrent_recording_loses_no_outcome() -> None:
    """Eight threads recording at once: every outcome is counted exactly once."""
    engine = make_engine(deescalation_thresholds={})

    def feed() -> None:
        for _ in range(5000):
            engine.record(True, at=0.0)

    threads = [threading.Thread(target=feed) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.outcomes_recorded == 40_000
    assert engine.success_streak == 40_000

"""Scoring, the Pareto frontier and the pick: what ``generate_recommendation`` does.

Each scenario (results with the same scenario name over one or more patterns are pooled) gets
four scores, each with a direction:

* ``sla_compliance`` (higher is better): event-weighted mean of ``sla_compliance_rate``;
* ``detection_delay_s`` (lower): mean delay from failure-burst onset to the escalation that
  answered it, an undetected burst counting the rest of the simulated time (``_run``);
* ``flaps_per_hour`` (lower): escalations reversed within the flap window, per simulated hour;
* ``restrictive_share`` (lower): share of simulated time outside the first policy.

A scenario is on the frontier when no other is at least as good on all four and better on one.
The pick goes down ``Priorities`` in order: keep the frontier members within a tolerance of the
best compliance, then of the best detection delay, then of the fewest flaps, then take the
least restrictive (ties by name). Tolerances stop a negligible difference on a higher priority
from hiding a large one on a lower priority.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ionveil.errors import ValidationError
from services.simulator._run import count_flaps

__all__ = ["Priorities", "ScenarioScore", "pareto_front", "recommend", "score_results"]

_OBJECTIVES = ("sla_compliance", "detection_delay_s", "flaps_per_hour", "restrictive_share")


@dataclass(frozen=True)
class Priorities:
    """The order in which a recommendation weighs scores, and what counts as a tie.

    Attributes:
        compliance_tolerance: Compliance within this of the best counts as equally good.
        detection_delay_tolerance_s: Detection delays within this many seconds of the best tie.
        flaps_per_hour_tolerance: Flap rates within this of the lowest tie.
    """

    compliance_tolerance: float = 0.005
    detection_delay_tolerance_s: float = 5.0
    flaps_per_hour_tolerance: float = 0.1


@dataclass
class ScenarioScore:
    """One scenario's pooled scores and its configuration."""

    scenario: str
    policy_order: list[str]
    escalation_threshold: int
    deescalation_thresholds: dict[str, int]
    results: int
    sla_compliance: float
    detection_delay_s: float
    flaps_per_hour: float
    restrictive_share: float
    bursts: int
    bursts_detected: int
    pareto_optimal: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain form for the recommendation dict and the wire."""
        return asdict(self)


def _key(score: ScenarioScore) -> tuple[float, float, float, float]:
    return (
        -score.sla_compliance,
        score.detection_delay_s,
        score.flaps_per_hour,
        score.restrictive_share,
    )


def score_results(results: Iterable[Any], flap_window_s: float) -> list[ScenarioScore]:
    """Pooled scores per scenario name over the completed results (in first-seen order)."""
    pooled: dict[str, dict[str, Any]] = {}
    for result in results:
        if getattr(result.status, "value", result.status) != "completed":
            continue
        m = result.metrics or {}
        seconds = float(m.get("simulated_seconds", result.duration_seconds or 0))
        first = result.scenario.policy_order[0]
        restrictive = float(
            m.get("restrictive_seconds", seconds - result.time_in_each_policy.get(first, 0.0))
        )
        acc = pooled.setdefault(
            result.scenario.name,
            {
                "scenario": result.scenario,
                "n": 0,
                "events": 0,
                "weighted": 0.0,
                "plain": 0.0,
                "delay": 0.0,
                "bursts": 0,
                "detected": 0,
                "flaps": 0,
                "seconds": 0.0,
                "restrictive": 0.0,
            },
        )
        events = int(m.get("events_processed", 0))
        acc["n"] += 1
        acc["events"] += events
        acc["weighted"] += result.sla_compliance_rate * events
        acc["plain"] += result.sla_compliance_rate
        acc["delay"] += float(m.get("detection_delay_total_s", 0.0))
        acc["bursts"] += int(m.get("bursts", 0))
        acc["detected"] += int(m.get("bursts_detected", 0))
        if m.get("flap_window_s") == flap_window_s and "flaps" in m:
            acc["flaps"] += int(m["flaps"])  # counted at run time over every transition
        else:
            acc["flaps"] += count_flaps(result.policy_transitions, flap_window_s)
        acc["seconds"] += seconds
        acc["restrictive"] += restrictive
    scores = []
    for name, acc in pooled.items():
        scenario = acc["scenario"]
        hours = acc["seconds"] / 3600.0
        scores.append(
            ScenarioScore(
                scenario=name,
                policy_order=list(scenario.policy_order),
                escalation_threshold=scenario.escalation_threshold,
                deescalation_thresholds=dict(scenario.deescalation_thresholds),
                results=acc["n"],
                sla_compliance=(
                    acc["weighted"] / acc["events"] if acc["events"] else acc["plain"] / acc["n"]
                ),
                detection_delay_s=acc["delay"] / acc["bursts"] if acc["bursts"] else 0.0,
                flaps_per_hour=acc["flaps"] / hours if hours else 0.0,
                restrictive_share=acc["restrictive"] / acc["seconds"] if acc["seconds"] else 0.0,
                bursts=acc["bursts"],
                bursts_detected=acc["detected"],
            )
        )
    return scores


def _dominates(a: ScenarioScore, b: ScenarioScore) -> bool:
    ka, kb = _key(a), _key(b)
    return all(x <= y for x, y in zip(ka, kb, strict=True)) and ka != kb


def pareto_front(scores: Sequence[ScenarioScore]) -> list[ScenarioScore]:
    """The scores no other score dominates (marks them ``pareto_optimal``), best key first."""
    front = [s for s in scores if not any(_dominates(o, s) for o in scores if o is not s)]
    for s in scores:
        s.pareto_optimal = s in front
    return sorted(front, key=lambda s: (_key(s), s.scenario))


def _pick(front: list[ScenarioScore], p: Priorities) -> ScenarioScore:
    best_c = max(s.sla_compliance for s in front)
    keep = [s for s in front if s.sla_compliance >= best_c - p.compliance_tolerance]
    best_d = min(s.detection_delay_s for s in keep)
    keep = [s for s in keep if s.detection_delay_s <= best_d + p.detection_delay_tolerance_s]
    best_f = min(s.flaps_per_hour for s in keep)
    keep = [s for s in keep if s.flaps_per_hour <= best_f + p.flaps_per_hour_tolerance]
    return min(keep, key=lambda s: (s.restrictive_share, _key(s), s.scenario))


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}%"


def _reasoning(chosen: ScenarioScore, scores: list[ScenarioScore], front: list) -> str:
    best_c = max(s.sla_compliance for s in scores)
    lines = [
        f"Recommended scenario {chosen.scenario!r}: escalate after "
        f"{chosen.escalation_threshold} consecutive failures, de-escalate after "
        f"{chosen.deescalation_thresholds or 'never (no thresholds)'} consecutive successes.",
        f"It keeps SLA compliance at {_pct(chosen.sla_compliance)} (best of all candidates "
        f"{_pct(best_c)}), answers failure bursts after {chosen.detection_delay_s:.1f} s on "
        f"average ({chosen.bursts_detected} of {chosen.bursts} bursts detected), flaps "
        f"{chosen.flaps_per_hour:.2f} times per hour and spends "
        f"{_pct(chosen.restrictive_share)} of the time in restrictive policies.",
        f"{len(front)} of {len(scores)} candidates are Pareto-optimal (no other candidate is at "
        "least as good on all four scores); among them the choice went by compliance first, "
        "then detection delay, then flapping, then time in restrictive policies, treating "
        "small differences as ties.",
    ]
    fastest = min(scores, key=lambda s: (s.detection_delay_s, s.scenario))
    if fastest.scenario != chosen.scenario and fastest.detection_delay_s < (
        chosen.detection_delay_s
    ):
        lines.append(
            f"{fastest.scenario!r} detects faster ({fastest.detection_delay_s:.1f} s) but "
            f"reaches {_pct(fastest.sla_compliance)} compliance and flaps "
            f"{fastest.flaps_per_hour:.2f} times per hour."
        )
    calmest = min(scores, key=lambda s: (s.restrictive_share, s.scenario))
    if calmest.scenario != chosen.scenario and not math.isclose(
        calmest.restrictive_share, chosen.restrictive_share
    ):
        lines.append(
            f"{calmest.scenario!r} restricts least ({_pct(calmest.restrictive_share)} of the "
            f"time) at {_pct(calmest.sla_compliance)} compliance."
        )
    return " ".join(lines)


def recommend(
    results: Sequence[Any], priorities: Priorities, *, flap_window_s: float
) -> dict[str, Any]:
    """The recommendation dict of ``PolicySimulator.generate_recommendation``.

    Raises:
        ValidationError: ``results`` holds no completed simulation.
    """
    if not isinstance(results, list | tuple) or not results:
        raise ValidationError("results: need at least one simulation result")
    scores = score_results(results, flap_window_s)
    if not scores:
        raise ValidationError("results: none of the simulations completed")
    front = pareto_front(scores)
    chosen = _pick(front, priorities)
    return {
        "recommended": {
            "scenario": chosen.scenario,
            "policy_order": chosen.policy_order,
            "escalation_threshold": chosen.escalation_threshold,
            "deescalation_thresholds": chosen.deescalation_thresholds,
        },
        "suggested_escalation_threshold": chosen.escalation_threshold,
        "suggested_deescalation_thresholds": dict(chosen.deescalation_thresholds),
        "frontier": [s.as_dict() for s in front],
        "scores": [s.as_dict() for s in sorted(scores, key=lambda s: (_key(s), s.scenario))],
        "priorities": {
            "order": list(_OBJECTIVES),
            **asdict(priorities),
            "flap_window_s": flap_window_s,
        },
        "reasoning": _reasoning(chosen, scores, front),
    }

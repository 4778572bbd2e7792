"""Plain-data forms of the simulator's values, for storage and the wire.

``*_from_dict`` functions accept what a JSON or MessagePack decoder produces (lists for tuples)
and raise ``ValidationError`` naming the field for anything missing or mistyped, so bad input
never reaches the engine. A result's pattern is stored as a summary (id, description, event
count) unless ``include_events`` is set: the events are the input, kept with the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ionveil.errors import ValidationError
from services.simulator.engine import (
    FailurePattern,
    PolicyScenario,
    SimulationResult,
    SimulationStatus,
)

__all__ = [
    "GENERATOR_NAMES",
    "pattern_from_dict",
    "pattern_from_spec",
    "pattern_to_dict",
    "result_from_dict",
    "result_to_dict",
    "scenario_from_dict",
    "scenario_to_dict",
]


def _mapping(data: object, field: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(f"{field}: must be an object")
    return data


def scenario_to_dict(scenario: PolicyScenario) -> dict[str, Any]:
    """A scenario as plain data."""
    return {
        "name": scenario.name,
        "policy_order": list(scenario.policy_order),
        "escalation_threshold": scenario.escalation_threshold,
        "deescalation_thresholds": dict(scenario.deescalation_thresholds),
        "metadata": dict(scenario.metadata),
    }


def scenario_from_dict(data: object, *, field: str = "scenario") -> PolicyScenario:
    """A scenario from plain data (not yet validated against the engine's rules).

    Raises:
        ValidationError: a required field is missing or not of the right shape.
    """
    d = _mapping(data, field)
    missing = [k for k in ("name", "policy_order", "escalation_threshold") if k not in d]
    if missing:
        raise ValidationError([f"{field}.{k}: required" for k in missing])
    order = d["policy_order"]
    deesc = d.get("deescalation_thresholds", {})
    metadata = d.get("metadata", {})
    problems = []
    if not isinstance(order, list | tuple):
        problems.append(f"{field}.policy_order: must be a list of policy names")
    if not isinstance(deesc, Mapping):
        problems.append(f"{field}.deescalation_thresholds: must be an object")
    if not isinstance(metadata, Mapping):
        problems.append(f"{field}.metadata: must be an object")
    if problems:
        raise ValidationError(problems)
    return PolicyScenario(
        name=d["name"],
        policy_order=list(order),
        escalation_threshold=d["escalation_threshold"],
        deescalation_thresholds=dict(deesc),
        metadata=dict(metadata),
    )


def pattern_to_dict(pattern: FailurePattern, *, include_events: bool = True) -> dict[str, Any]:
    """A pattern as plain data; events as ``[offset, is_success]`` pairs (or only a count)."""
    out: dict[str, Any] = {
        "pattern_id": pattern.pattern_id,
        "description": pattern.description,
        "event_count": len(pattern.events),
    }
    if include_events:
        out["events"] = [[o, s] for o, s in pattern.events]
    return out


def pattern_from_dict(data: object, *, field: str = "pattern") -> FailurePattern:
    """A pattern from plain data; events become tuples (not yet validated).

    Raises:
        ValidationError: ``pattern_id`` missing or ``events`` not a list of pairs.
    """
    d = _mapping(data, field)
    if "pattern_id" not in d:
        raise ValidationError(f"{field}.pattern_id: required")
    events = d.get("events", [])
    if not isinstance(events, list | tuple):
        raise ValidationError(f"{field}.events: must be a list of [offset, is_success] pairs")
    try:
        pairs = [(e[0], e[1]) if isinstance(e, list | tuple) and len(e) == 2 else e for e in events]
    except (TypeError, IndexError) as exc:  # pragma: no cover - guarded by the check above
        raise ValidationError(f"{field}.events: {exc}") from exc
    return FailurePattern(
        pattern_id=d["pattern_id"], events=pairs, description=d.get("description", "")
    )


def result_to_dict(
    result: SimulationResult,
    *,
    include_events: bool = False,
    max_transitions: int | None = None,
) -> dict[str, Any]:
    """A result as plain data (the pattern summarised unless ``include_events``).

    ``max_transitions`` keeps only the first so many transitions (for size-limited messages);
    ``transitions_total`` and ``transitions_truncated`` then say what was left out. Counts,
    times and metrics always cover every transition.
    """
    transitions = result.policy_transitions
    extra: dict[str, Any] = {}
    if max_transitions is not None and len(transitions) > max_transitions:
        extra = {"transitions_total": len(transitions), "transitions_truncated": True}
        transitions = transitions[:max_transitions]
    return {
        **extra,
        "simulation_id": result.simulation_id,
        "scenario": scenario_to_dict(result.scenario),
        "failure_pattern": pattern_to_dict(result.failure_pattern, include_events=include_events),
        "policy_transitions": [dict(t) for t in transitions],
        "final_policy": result.final_policy,
        "total_escalations": result.total_escalations,
        "total_deescalations": result.total_deescalations,
        "time_in_each_policy": dict(result.time_in_each_policy),
        "sla_compliance_rate": result.sla_compliance_rate,
        "status": result.status.value,
        "error_message": result.error_message,
        "metrics": dict(result.metrics),
        "duration_seconds": result.duration_seconds,
    }


def result_from_dict(data: object) -> SimulationResult:
    """Inverse of :func:`result_to_dict` (a summarised pattern comes back without events).

    Raises:
        ValidationError: a required field is missing or mistyped.
    """
    d = _mapping(data, "result")
    try:
        return SimulationResult(
            simulation_id=str(d["simulation_id"]),
            scenario=scenario_from_dict(d["scenario"]),
            failure_pattern=pattern_from_dict(d["failure_pattern"], field="failure_pattern"),
            policy_transitions=[dict(t) for t in d["policy_transitions"]],
            final_policy=str(d["final_policy"]),
            total_escalations=int(d["total_escalations"]),
            total_deescalations=int(d["total_deescalations"]),
            time_in_each_policy={str(k): float(v) for k, v in d["time_in_each_policy"].items()},
            sla_compliance_rate=float(d["sla_compliance_rate"]),
            status=SimulationStatus(d["status"]),
            error_message=d.get("error_message"),
            metrics=dict(d.get("metrics") or {}),
            duration_seconds=int(d.get("duration_seconds", 0)),
        )
    except KeyError as exc:
        raise ValidationError(f"result.{exc.args[0]}: required") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValidationError(f"result: {exc}") from exc


_GENERATORS = {
    "constant": "constant_failure_rate",
    "burst": "burst_failure",
    "cascade": "cascading_failure",
}
GENERATOR_NAMES: tuple[str, ...] = tuple(_GENERATORS)


def pattern_from_spec(spec: object, *, field: str = "pattern") -> FailurePattern:
    """A pattern from explicit events or from a generator name and its parameters.

    ``{"events": [[offset, ok], ...], "pattern_id"?, "description"?}`` or
    ``{"generator": "constant" | "burst" | "cascade", "params": {...}}`` where ``params`` are the
    keyword arguments of the ``FailurePatternGenerator`` method (``seed`` included).

    Raises:
        ValidationError: unknown generator, unknown or missing parameters, bad values.
    """
    from services.simulator.engine import FailurePatternGenerator

    d = _mapping(spec, field)
    generator = d.get("generator")
    if generator is None:
        return pattern_from_dict({"pattern_id": "explicit", **d}, field=field)
    if generator not in _GENERATORS:
        raise ValidationError(
            f"{field}.generator: must be one of {list(_GENERATORS)}, got {generator!r}"
        )
    params = _mapping(d.get("params", {}), f"{field}.params")
    method = getattr(FailurePatternGenerator, _GENERATORS[generator])
    try:
        pattern = method(**params)
    except TypeError as exc:
        raise ValidationError(f"{field}.params: {exc}") from exc
    if d.get("pattern_id"):
        pattern.pattern_id = str(d["pattern_id"])
    return pattern

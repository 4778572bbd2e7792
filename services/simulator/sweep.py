"""Candidate scenarios around a base scenario: the grid a recommendation chooses from."""

from __future__ import annotations

from collections.abc import Sequence

from ionveil.errors import ValidationError
from services.simulator.engine import PolicyScenario, validate_scenario

__all__ = ["DEFAULT_DEESCALATION_SCALES", "sweep_scenarios"]

DEFAULT_DEESCALATION_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)


def _default_thresholds(base: int) -> list[int]:
    return sorted({max(1, base + d) for d in (-2, -1, 0, 1, 2)})


def sweep_scenarios(
    base: PolicyScenario,
    escalation_thresholds: Sequence[int] | None = None,
    deescalation_scales: Sequence[float] | None = None,
) -> list[PolicyScenario]:
    """Every combination of an escalation threshold and a de-escalation scale.

    Each candidate keeps the base's policy order; its de-escalation thresholds are the base's
    multiplied by the scale and rounded (at least 1). Names are
    ``"<base>/esc=<t>/deesc=x<scale>"``; duplicates (two scales rounding to the same
    thresholds) are dropped, keeping the first.

    Args:
        base: The scenario to vary (valid).
        escalation_thresholds: Thresholds to try; default the base's +-2 (at least 1).
        deescalation_scales: Factors for the de-escalation thresholds; default
            ``DEFAULT_DEESCALATION_SCALES``.

    Raises:
        ValidationError: invalid base, a threshold below 1 or a scale that is not > 0.
    """
    problems = [f"base.{p}" for p in validate_scenario(base)]
    thresholds = (
        list(escalation_thresholds)
        if escalation_thresholds is not None
        else _default_thresholds(base.escalation_threshold if not problems else 1)
    )
    scales = list(
        deescalation_scales if deescalation_scales is not None else (DEFAULT_DEESCALATION_SCALES)
    )
    if not thresholds:
        problems.append("escalation_thresholds: need at least one")
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            problems.append(f"escalation_thresholds: must be integers >= 1, got {t!r}")
    if not scales:
        problems.append("deescalation_scales: need at least one")
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
            problems.append(f"deescalation_scales: must be numbers > 0, got {s!r}")
    if problems:
        raise ValidationError(problems)
    out: list[PolicyScenario] = []
    seen: set[tuple[int, tuple[tuple[str, int], ...]]] = set()
    for t in thresholds:
        for s in scales:
            deesc = {p: max(1, round(v * s)) for p, v in base.deescalation_thresholds.items()}
            key = (t, tuple(sorted(deesc.items())))
            if key in seen:
                continue
            seen.add(key)
            out.append(
                PolicyScenario(
                    name=f"{base.name}/esc={t}/deesc=x{s:g}",
                    policy_order=list(base.policy_order),
                    escalation_threshold=t,
                    deescalation_thresholds=deesc,
                    metadata={**base.metadata, "base": base.name, "deescalation_scale": s},
                )
            )
    return out

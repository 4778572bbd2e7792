"""What each rule condition means, in one place, for both the per-incident and the batch path.

Incident conditions (one alert per rule and incident):

- ``sla_breach`` fires when the time since dispatch is strictly beyond
  ``target x min_magnitude`` minutes (``min_magnitude`` defaults to 1.0, so it fires exactly
  when ``SLAMonitor.is_breached``; arriving exactly on target is met).
- ``sla_warning`` fires when ``SLAMonitor.remaining_pct`` is at or below
  ``sla_remaining_pct``, i.e. once ``target x (1 - pct/100)`` minutes have elapsed. It stays
  open when the incident goes on to breach (a separate ``sla_breach`` rule reports that).

Both honour an optional ``priorities`` list. Each reduces to "dispatched at or before a
cut-off time", which is what lets ``_tracker.ActiveIncidents`` check 100,000 incidents with a
binary search per (rule, priority) instead of one evaluation per incident.

Org conditions (one alert per rule and org, or per rule and region):

- ``threshold`` with ``metric: open_breaches`` fires when more than ``max`` of the org's active
  incidents are past their SLA target; with ``metric: compliance_rate`` when the share of the
  org's incidents that arrived within target, among those arriving in the last
  ``window_minutes`` (default 60), is below ``min`` (no arrivals: rate 1.0, nothing missed).
- ``pattern`` with ``consecutive_breaches: N`` fires when the org's last N SLA outcomes were all
  breaches (per region with ``scope: "region"``). An incident's outcome is recorded once: a
  breach when it is first seen past its target, a success when it arrives within target.

The outcomes are kept by the store (``AlertStore.outcome_view``), so every replica decides on
the same streaks and rates: ``OutcomeLog`` in one process, ``OutcomeSnapshot`` read from the
PostgreSQL rows every replica updates.

Org alerts resolve on their own (actor ``system``) once the condition no longer holds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from services.alerts.models import AlertRule

__all__ = [
    "INCIDENT_CONDITIONS",
    "ORG_CONDITIONS",
    "OutcomeLog",
    "OutcomeSnapshot",
    "OutcomeView",
    "incident_cutoff_minutes",
    "incident_rule_fires",
    "org_rule_fires",
    "rule_priorities",
]

INCIDENT_CONDITIONS = frozenset({"sla_breach", "sla_warning"})
ORG_CONDITIONS = frozenset({"threshold", "pattern"})


def rule_priorities(rule: AlertRule) -> frozenset[int]:
    """The priorities an incident rule watches (all five unless it lists some)."""
    return frozenset(rule.threshold_config.get("priorities") or (1, 2, 3, 4, 5))


def incident_cutoff_minutes(rule: AlertRule, target_minutes: int) -> tuple[float, bool]:
    """Minutes after dispatch at which an incident rule fires, and whether that is inclusive.

    Returns:
        ``(minutes, inclusive)``: the rule fires when elapsed > minutes (or >= when inclusive).
    """
    if rule.condition_type == "sla_breach":
        return target_minutes * float(rule.threshold_config.get("min_magnitude", 1.0)), False
    pct = float(rule.threshold_config["sla_remaining_pct"])
    return target_minutes * (1.0 - pct / 100.0), True


def incident_rule_fires(
    rule: AlertRule, priority: int, target_minutes: int, elapsed_minutes: float
) -> bool:
    """Whether an incident rule fires for an incident ``elapsed_minutes`` after dispatch."""
    if priority not in rule_priorities(rule):
        return False
    cutoff, inclusive = incident_cutoff_minutes(rule, target_minutes)
    return elapsed_minutes >= cutoff if inclusive else elapsed_minutes > cutoff


class OutcomeView(Protocol):
    """What org rules read of the recorded SLA outcomes."""

    def breach_streak(self, org_id: str, region: str | None = None) -> int:
        """How many of the latest outcomes (org-wide, or in ``region``) were breaches in a row."""
        ...

    def regions(self, org_id: str) -> list[str]:
        """Regions of ``org_id`` with recorded outcomes."""
        ...

    def compliance_rate(self, org_id: str, since: float) -> float:
        """Share of arrivals at or after ``since`` that met their target (1.0 with none)."""
        ...

    def orgs(self) -> list[str]:
        """Orgs with any recorded outcome."""
        ...


@dataclass(slots=True)
class OutcomeSnapshot:
    """An ``OutcomeView`` read from shared rows: streak counters and recent arrivals.

    Attributes:
        streaks: consecutive breaches per (org, region); region None is org-wide.
        arrivals: (epoch seconds, met) of each org's recent arrivals.
    """

    streaks: dict[tuple[str, str | None], int] = field(default_factory=dict)
    arrivals: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)

    def breach_streak(self, org_id: str, region: str | None = None) -> int:
        """See ``OutcomeView.breach_streak``."""
        return self.streaks.get((org_id, region), 0)

    def regions(self, org_id: str) -> list[str]:
        """See ``OutcomeView.regions``."""
        return sorted(r for (o, r) in self.streaks if o == org_id and r is not None)

    def compliance_rate(self, org_id: str, since: float) -> float:
        """See ``OutcomeView.compliance_rate``."""
        recent = [met for at, met in self.arrivals.get(org_id, ()) if at >= since]
        return 1.0 if not recent else sum(recent) / len(recent)

    def orgs(self) -> list[str]:
        """See ``OutcomeView.orgs``."""
        return sorted({o for (o, _) in self.streaks} | set(self.arrivals))


@dataclass(slots=True)
class _Outcome:
    at: float  # epoch seconds
    met: bool


class OutcomeLog:
    """Recent SLA outcomes per org and per (org, region), in this process (an ``OutcomeView``).

    Bounded: at most ``keep`` outcomes per key (enough for any ``consecutive_breaches`` up to
    ``keep`` and a compliance window of that many arrivals).
    """

    def __init__(self, keep: int = 10_000) -> None:
        self._keep = keep
        self._by_key: dict[tuple[str, str | None], deque[_Outcome]] = {}
        self._arrivals: dict[str, deque[_Outcome]] = {}

    def record(
        self,
        org_id: str,
        region: str | None,
        *,
        met: bool,
        at: float,
        arrived: bool,
        streak: bool = True,
    ) -> None:
        """Record one incident's outcome.

        Args:
            met: the SLA was met.
            at: when (epoch seconds).
            arrived: a unit arrived: the outcome counts for the compliance rate.
            streak: the outcome counts for breach streaks (False when the incident's breach
                was already counted when it was first seen past its target).
        """
        keys: list[tuple[str, str | None]] = [(org_id, None)]
        if region:
            keys.append((org_id, region))
        for key in keys if streak else ():
            self._by_key.setdefault(key, deque(maxlen=self._keep)).append(_Outcome(at, met))
        if arrived:
            self._arrivals.setdefault(org_id, deque(maxlen=self._keep)).append(_Outcome(at, met))

    def breach_streak(self, org_id: str, region: str | None = None) -> int:
        """How many of the latest outcomes (org-wide, or in ``region``) were breaches in a row."""
        streak = 0
        for outcome in reversed(self._by_key.get((org_id, region), ())):
            if outcome.met:
                break
            streak += 1
        return streak

    def regions(self, org_id: str) -> list[str]:
        """Regions of ``org_id`` with recorded outcomes."""
        return sorted(r for (o, r) in self._by_key if o == org_id and r is not None)

    def compliance_rate(self, org_id: str, since: float) -> float:
        """Share of arrivals at or after ``since`` that met their target (1.0 with none)."""
        recent = [o for o in self._arrivals.get(org_id, ()) if o.at >= since]
        return 1.0 if not recent else sum(o.met for o in recent) / len(recent)

    def orgs(self) -> list[str]:
        """Orgs with any recorded outcome."""
        return sorted({o for (o, _) in self._by_key} | set(self._arrivals))


def org_rule_fires(
    rule: AlertRule,
    org_id: str,
    region: str | None,
    *,
    open_breaches: int,
    outcomes: OutcomeView,
    now: float,
) -> tuple[bool, dict[str, float]]:
    """Whether an org rule fires for ``org_id`` (or one of its regions), and the measure.

    Returns:
        ``(fires, details)`` where details names the measured value for the alert's metadata.
    """
    cfg = rule.threshold_config
    if rule.condition_type == "threshold":
        if cfg["metric"] == "open_breaches":
            return open_breaches > int(cfg["max"]), {"open_breaches": float(open_breaches)}
        window_s = float(cfg.get("window_minutes", 60)) * 60.0
        rate = outcomes.compliance_rate(org_id, now - window_s)
        return rate < float(cfg["min"]), {"compliance_rate": rate}
    streak = outcomes.breach_streak(org_id, region)
    return streak >= int(cfg["consecutive_breaches"]), {"consecutive_breaches": float(streak)}

"""Domain values of the alerting service: the seed's enums and dataclasses, plus validation.

The dataclass fields are the seed contract (Task 3); ``AlertRule`` gains one trailing field with
a default, ``org_id``: a rule applies to every org unless it names one. Service-internal
bookkeeping of an ``Alert`` (change sequence, subject key, level timer, history) lives in
``Alert.metadata`` under the keys named by the ``META_*`` constants, so the contract's fields
stay exactly as written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from ionveil.errors import ValidationError

__all__ = [
    "CONDITION_TYPES",
    "MAX_TEXT_LENGTH",
    "META_HISTORY",
    "META_LEVEL_SINCE",
    "META_SEQ",
    "META_SUBJECT",
    "POLICY_SEVERITY",
    "Alert",
    "AlertRule",
    "AlertSeverity",
    "AlertStatus",
    "EscalationLevel",
    "EscalationPolicy",
    "SLAViolation",
    "validate_escalation_policy",
    "validate_rule",
]

MAX_TEXT_LENGTH = 256
"""Longest id or name accepted from a client (descriptions may be 16 times longer)."""

META_SEQ = "seq"  # change sequence: 1 when opened, +1 per state change (fencing + Nats-Msg-Id)
META_SUBJECT = "subject_key"  # what the alert is about: incident id, "org", "region:<r>", "policy"
META_LEVEL_SINCE = "level_since"  # RFC 3339 time the alert reached its current escalation level
META_HISTORY = "history"  # the alert's own trail: [{at, actor, action, from, to, note}]


class AlertSeverity(str, Enum):
    """How loud an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"


class AlertStatus(str, Enum):
    """Where an alert is in its lifecycle (legal moves: ``services.alerts._lifecycle``)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"
    ESCALATED = "escalated"


class EscalationLevel(int, Enum):
    """Who an alert is in front of."""

    L1_OPERATOR = 1
    L2_SUPERVISOR = 2
    L3_MANAGER = 3
    L4_EXECUTIVE = 4


POLICY_SEVERITY: dict[str, AlertSeverity] = {
    "normal": AlertSeverity.INFO,
    "watch": AlertSeverity.WARNING,
    "restricted": AlertSeverity.CRITICAL,
    "halted": AlertSeverity.EMERGENCY,
}
"""ARCHITECTURE.md, "Domain rules": the live policy an org is in -> the severity of its alert."""

CONDITION_TYPES: tuple[str, ...] = ("sla_breach", "sla_warning", "threshold", "pattern")


@dataclass
class AlertRule:
    """Defines when and how to generate alerts.

    ``condition_type`` and ``threshold_config`` (see ``services.alerts.rules`` for the exact
    semantics of each):

    - ``sla_breach``: an active incident's time since dispatch is beyond its priority's SLA
      target. Optional ``min_magnitude`` (>= 1.0, elapsed/target), ``priorities`` (list of 1..5).
    - ``sla_warning``: remaining time is at or below ``sla_remaining_pct`` (0 < pct <= 100,
      required) percent of the target. Optional ``priorities``.
    - ``threshold``: an org-level measure crosses a bound: ``metric`` is ``open_breaches``
      (active incidents past their target; fires when the count exceeds ``max``) or
      ``compliance_rate`` (share of incidents reached within target among those arriving in
      the last ``window_minutes``, default 60; fires when below ``min``).
    - ``pattern``: ``consecutive_breaches`` (int >= 1) SLA breaches in a row in the org, or per
      region with ``scope: "region"``.
    """

    rule_id: str
    name: str
    description: str
    condition_type: str  # "sla_breach", "sla_warning", "threshold", "pattern"
    threshold_config: dict[str, Any]
    severity: AlertSeverity
    notification_channels: list[str]  # ["email", "sms", "slack", "pagerduty"]
    escalation_after_minutes: int | None = None
    suppression_window_minutes: int = 5
    enabled: bool = True
    org_id: str | None = None  # IonVeil addition: None = the rule applies to every org

    def applies_to(self, org_id: str) -> bool:
        """True when the rule is enabled and scoped to ``org_id`` (or to every org)."""
        return self.enabled and (self.org_id is None or self.org_id == org_id)


@dataclass
class Alert:
    """A generated alert instance."""

    alert_id: str
    rule_id: str
    org_id: str
    incident_id: str | None
    severity: AlertSeverity
    status: AlertStatus
    title: str
    description: str
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    escalation_level: EscalationLevel = EscalationLevel.L1_OPERATOR
    escalation_history: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        """The alert's change sequence (1 when opened)."""
        return int(self.metadata.get(META_SEQ, 0))

    @property
    def subject_key(self) -> str:
        """What the alert is about; one open alert per (org, rule, subject_key)."""
        return str(self.metadata.get(META_SUBJECT) or self.incident_id or "org")

    @property
    def is_active(self) -> bool:
        """True until the alert is resolved."""
        return self.status is not AlertStatus.RESOLVED


@dataclass
class EscalationPolicy:
    """Defines escalation chain for alerts.

    ``levels``: ``[{"level": 1, "timeout_minutes": 15, "channels": ["email"]}, ...]``; an
    unacknowledged alert at level N escalates to N+1 once it has been at N for N's
    ``timeout_minutes``. At the top level it is re-notified every ``repeat_after_minutes``
    (when set). ``max_escalations`` caps automatic steps (escalations plus repeats) per alert.
    """

    policy_id: str
    name: str
    levels: list[dict[str, Any]]
    repeat_after_minutes: int | None = None
    max_escalations: int = 3

    def level(self, number: int) -> dict[str, Any] | None:
        """The level entry numbered ``number``, if the policy has one."""
        for entry in self.levels:
            if int(entry["level"]) == number:
                return entry
        return None

    @property
    def top_level(self) -> int:
        """The highest level number of the chain."""
        return max(int(entry["level"]) for entry in self.levels)


@dataclass
class SLAViolation:
    """Details of an SLA violation."""

    incident_id: str
    org_id: str
    priority: int
    sla_target_minutes: int
    actual_minutes: float
    breach_time: datetime
    breach_magnitude: float  # how much over SLA (1.5 = 50% over)


def _text(name: str, value: object, problems: list[str], *, limit: int = MAX_TEXT_LENGTH) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name}: must be a non-empty string")
    elif len(value) > limit:
        problems.append(f"{name}: at most {limit} characters, got {len(value)}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _priorities(cfg: dict[str, Any], problems: list[str]) -> None:
    if "priorities" not in cfg:
        return
    value = cfg["priorities"]
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 5 for p in value)
    ):
        problems.append("threshold_config.priorities: must be a non-empty list of integers 1..5")


def _condition_problems(rule: AlertRule, problems: list[str]) -> None:
    cfg = rule.threshold_config
    kind = rule.condition_type
    if kind == "sla_breach":
        magnitude = cfg.get("min_magnitude", 1.0)
        if not _number(magnitude) or magnitude < 1.0:
            problems.append("threshold_config.min_magnitude: must be a number >= 1.0")
        _priorities(cfg, problems)
    elif kind == "sla_warning":
        pct = cfg.get("sla_remaining_pct")
        if pct is None:
            problems.append("threshold_config.sla_remaining_pct: required for sla_warning")
        elif not _number(pct) or not 0 < pct <= 100:
            problems.append("threshold_config.sla_remaining_pct: must be a number in (0, 100]")
        _priorities(cfg, problems)
    elif kind == "threshold":
        metric = cfg.get("metric")
        if metric == "open_breaches":
            bound = cfg.get("max")
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                problems.append("threshold_config.max: open_breaches needs an integer >= 0")
        elif metric == "compliance_rate":
            bound = cfg.get("min")
            if not _number(bound) or not 0 < bound <= 1:
                problems.append("threshold_config.min: compliance_rate needs a number in (0, 1]")
            window = cfg.get("window_minutes", 60)
            if not _number(window) or not 0 < window <= 7 * 24 * 60:
                problems.append("threshold_config.window_minutes: must be in (0, 10080]")
        else:
            problems.append(
                "threshold_config.metric: must be 'open_breaches' or 'compliance_rate', "
                f"got {metric!r}"
            )
    elif kind == "pattern":
        count = cfg.get("consecutive_breaches")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
            problems.append("threshold_config.consecutive_breaches: must be an integer 1..10000")
        if cfg.get("scope", "org") not in ("org", "region"):
            problems.append("threshold_config.scope: must be 'org' or 'region'")


def validate_rule(rule: AlertRule) -> None:
    """Check every field of ``rule``.

    Raises:
        ValidationError: listing each problem, each naming its field.
    """
    problems: list[str] = []
    _text("rule_id", rule.rule_id, problems)
    _text("name", rule.name, problems)
    if not isinstance(rule.description, str) or len(rule.description) > 16 * MAX_TEXT_LENGTH:
        problems.append(f"description: must be a string of at most {16 * MAX_TEXT_LENGTH} chars")
    if rule.condition_type not in CONDITION_TYPES:
        problems.append(
            f"condition_type: must be one of {', '.join(CONDITION_TYPES)}, "
            f"got {rule.condition_type!r}"
        )
    if not isinstance(rule.threshold_config, dict):
        problems.append("threshold_config: must be a mapping")
    elif rule.condition_type in CONDITION_TYPES:
        _condition_problems(rule, problems)
    if not isinstance(rule.severity, AlertSeverity):
        problems.append(f"severity: must be one of {[s.value for s in AlertSeverity]}")
    channels = rule.notification_channels
    if not isinstance(channels, list) or not channels:
        problems.append("notification_channels: at least one channel is required")
    else:
        for channel in channels:
            _text("notification_channels[]", channel, problems)
    minutes = rule.escalation_after_minutes
    if minutes is not None and (
        not isinstance(minutes, int) or isinstance(minutes, bool) or minutes <= 0
    ):
        problems.append("escalation_after_minutes: must be a positive integer or null")
    window = rule.suppression_window_minutes
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        problems.append("suppression_window_minutes: must be an integer >= 0")
    if not isinstance(rule.enabled, bool):
        problems.append("enabled: must be a boolean")
    if rule.org_id is not None:
        _text("org_id", rule.org_id, problems)
    if problems:
        raise ValidationError(problems)


def validate_escalation_policy(policy: EscalationPolicy) -> None:
    """Check an escalation chain: levels 1..4, increasing, each with a timeout and channels.

    Raises:
        ValidationError: listing each problem, each naming its field.
    """
    problems: list[str] = []
    _text("policy_id", policy.policy_id, problems)
    _text("name", policy.name, problems)
    if not isinstance(policy.levels, list) or not policy.levels:
        problems.append("levels: at least one level is required")
    else:
        seen: list[int] = []
        for i, entry in enumerate(policy.levels):
            where = f"levels[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: must be a mapping")
                continue
            number = entry.get("level")
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 4:
                problems.append(f"{where}.level: must be an integer 1..4")
            else:
                seen.append(number)
            timeout = entry.get("timeout_minutes")
            if not _number(timeout) or timeout <= 0:
                problems.append(f"{where}.timeout_minutes: must be a number > 0")
            channels = entry.get("channels")
            if not isinstance(channels, list) or not all(
                isinstance(c, str) and c.strip() for c in channels
            ):
                problems.append(f"{where}.channels: must be a list of channel names")
        if seen and (seen != sorted(seen) or len(set(seen)) != len(seen)):
            problems.append("levels: level numbers must be strictly increasing")
    repeat = policy.repeat_after_minutes
    if repeat is not None and (not _number(repeat) or repeat <= 0):
        problems.append("repeat_after_minutes: must be a number > 0 or null")
    cap = policy.max_escalations
    if not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= 1000:
        problems.append("max_escalations: must be an integer 0..1000")
    if problems:
        raise ValidationError(problems)

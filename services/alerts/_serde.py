"""Alerts, rules and policies to and from plain dicts (JSON columns, wire payloads).

Parsing from a dict is the boundary where client input becomes domain values: every problem is
reported as a ``ValidationError`` naming the field, never a ``TypeError`` from deep inside.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ionveil.errors import ValidationError
from services.alerts.models import (
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    EscalationLevel,
    EscalationPolicy,
    validate_escalation_policy,
    validate_rule,
)

__all__ = [
    "alert_from_dict",
    "alert_summary",
    "alert_to_dict",
    "iso",
    "parse_time",
    "policy_from_dict",
    "policy_to_dict",
    "rule_from_dict",
    "rule_to_dict",
]

_ALERT_TIMES = ("created_at", "updated_at", "acknowledged_at", "resolved_at")


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC text of an aware datetime (None stays None)."""
    return None if value is None else value.astimezone(UTC).isoformat()


def parse_time(value: Any, *, field: str) -> datetime:
    """An aware UTC datetime from RFC 3339 text, epoch seconds or a datetime.

    Raises:
        ValidationError: naming ``field`` when the value is none of those.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValidationError(f"{field}: epoch seconds out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{field}: not an RFC 3339 time: {value[:40]!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValidationError(f"{field}: must be an RFC 3339 string or epoch seconds")


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The whole alert as JSON-ready values (enums as values, times as RFC 3339)."""
    out = asdict(alert)
    out["severity"] = alert.severity.value
    out["status"] = alert.status.value
    out["escalation_level"] = int(alert.escalation_level)
    for name in _ALERT_TIMES:
        out[name] = iso(getattr(alert, name))
    return out


def alert_from_dict(data: dict[str, Any]) -> Alert:
    """Inverse of ``alert_to_dict`` (used for stored rows, which are trusted)."""
    values = dict(data)
    values["severity"] = AlertSeverity(values["severity"])
    values["status"] = AlertStatus(values["status"])
    values["escalation_level"] = EscalationLevel(int(values["escalation_level"]))
    for name in _ALERT_TIMES:
        raw = values.get(name)
        values[name] = None if raw is None else parse_time(raw, field=name)
    return Alert(**values)


def alert_summary(alert: Alert) -> dict[str, Any]:
    """The state an audit record's before/after shows (the alert minus its history)."""
    return {
        "status": alert.status.value,
        "severity": alert.severity.value,
        "escalation_level": int(alert.escalation_level),
        "acknowledged_by": alert.acknowledged_by,
        "resolved_by": alert.resolved_by,
        "seq": alert.seq,
    }


def rule_to_dict(rule: AlertRule) -> dict[str, Any]:
    """A rule as JSON-ready values."""
    out = asdict(rule)
    out["severity"] = rule.severity.value
    return out


_RULE_FIELDS = {
    "rule_id",
    "name",
    "description",
    "condition_type",
    "threshold_config",
    "severity",
    "notification_channels",
    "escalation_after_minutes",
    "suppression_window_minutes",
    "enabled",
    "org_id",
}


def rule_from_dict(data: Any) -> AlertRule:
    """Parse and validate a rule sent by a client (unknown fields are ignored).

    Raises:
        ValidationError: naming every missing or invalid field.
    """
    if not isinstance(data, dict):
        raise ValidationError("rule: must be a mapping")
    missing = [
        f"{name}: required"
        for name in ("rule_id", "name", "condition_type", "severity", "notification_channels")
        if name not in data
    ]
    if missing:
        raise ValidationError(missing)
    values = {k: v for k, v in data.items() if k in _RULE_FIELDS}
    values.setdefault("description", "")
    values.setdefault("threshold_config", {})
    try:
        values["severity"] = AlertSeverity(values["severity"])
    except ValueError:
        raise ValidationError(
            f"severity: must be one of {[s.value for s in AlertSeverity]}"
        ) from None
    rule = AlertRule(**values)
    validate_rule(rule)
    return rule


def policy_to_dict(policy: EscalationPolicy) -> dict[str, Any]:
    """An escalation policy as JSON-ready values."""
    return asdict(policy)


def policy_from_dict(data: Any) -> EscalationPolicy:
    """Parse and validate an escalation policy.

    Raises:
        ValidationError: naming every missing or invalid field.
    """
    if not isinstance(data, dict):
        raise ValidationError("policy: must be a mapping")
    missing = [f"{n}: required" for n in ("policy_id", "name", "levels") if n not in data]
    if missing:
        raise ValidationError(missing)
    allowed = {"policy_id", "name", "levels", "repeat_after_minutes", "max_escalations"}
    policy = EscalationPolicy(**{k: v for k, v in data.items() if k in allowed})
    validate_escalation_policy(policy)
    return policy

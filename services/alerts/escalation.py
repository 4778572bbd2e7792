"""``EscalationManager``: moves unacknowledged alerts up their org's escalation chain on time.

Timing is derived from what is stored with the alert, never from in-memory timers: an alert
records when it reached its current level (``metadata["level_since"]``). ``check_escalations``
escalates an *unacknowledged* (open or escalated) alert from level N once it has been at N for
N's ``timeout_minutes`` (the org's ``EscalationPolicy``; without a policy, the rule's
``escalation_after_minutes``, one level at a time up to L4). At the top level it re-notifies
every ``repeat_after_minutes`` (a "repeat" entry, no status change). ``max_escalations`` caps
the automatic steps (escalations plus repeats) of one alert; a hand-made ``escalate_alert`` is
refused only past the top level.

Each step is a fenced store update (``WHERE seq = <the sequence read>``): a restarted worker
escalates on time, and two replicas checking at once escalate an alert once. Each step is
recorded in ``escalation_history``, audited, published, and notified through the new level's
channels (and the seed's ``notification_callback(alert, level)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from services.alerts._lifecycle import IllegalTransitionError
from services.alerts._serde import iso, parse_time, policy_to_dict
from services.alerts.models import (
    META_LEVEL_SINCE,
    Alert,
    AlertStatus,
    EscalationLevel,
    EscalationPolicy,
    validate_escalation_policy,
)
from services.alerts.store import Change

if TYPE_CHECKING:
    from services.alerts.monitor import SLAMonitorService

__all__ = ["DEFAULT_MAX_ESCALATIONS", "EscalationManager"]

log = structlog.get_logger(__name__)

DEFAULT_MAX_ESCALATIONS = 3
"""Automatic steps allowed for an alert of an org without a policy (rule-timed escalation)."""

_TOP = int(max(EscalationLevel))


class EscalationManager:
    """Manages alert escalation according to policies.

    Args:
        monitor: The SLA monitor service (its store, clock, notifier and rules are used).
        notification_callback: Called with (alert, new level) on every escalation step.
    """

    def __init__(
        self,
        monitor: SLAMonitorService,
        notification_callback: Callable[[Alert, EscalationLevel], None] | None = None,
    ) -> None:
        self._monitor = monitor
        self._callback = notification_callback
        self._policies: dict[str, EscalationPolicy] = {}
        self._lock = threading.Lock()
        monitor.escalation = self

    def set_policy(self, org_id: str, policy: EscalationPolicy) -> None:
        """Set the escalation policy of an org (in this process; ``save_policy`` persists).

        Raises:
            ValidationError: the policy is invalid (each problem named).
        """
        validate_escalation_policy(policy)
        with self._lock:
            self._policies[org_id] = policy

    async def save_policy(
        self, org_id: str, policy: EscalationPolicy, *, actor: str = "system"
    ) -> None:
        """``set_policy``, then persist it (audited) for every replica."""
        self.set_policy(org_id, policy)
        change = Change(
            actor, "escalation_policy.saved", self._monitor.now(), after=policy_to_dict(policy)
        )
        await self._monitor.store.save_policy(org_id, policy, change)

    def get_policy(self, org_id: str) -> EscalationPolicy | None:
        """The org's escalation policy, if set."""
        with self._lock:
            return self._policies.get(org_id)

    # ------------------------------------------------------------ chain arithmetic
    def _top_level(self, org_id: str) -> int:
        policy = self.get_policy(org_id)
        return policy.top_level if policy is not None else _TOP

    def _next_level(self, alert: Alert) -> int | None:
        current = int(alert.escalation_level)
        policy = self.get_policy(alert.org_id)
        if policy is None:
            return current + 1 if current < _TOP else None
        higher = sorted(int(e["level"]) for e in policy.levels if int(e["level"]) > current)
        return higher[0] if higher else None

    def _timeout_minutes(self, alert: Alert) -> float | None:
        policy = self.get_policy(alert.org_id)
        if policy is not None:
            entry = policy.level(int(alert.escalation_level))
            if entry is None:  # below the chain's first level: use its first timeout
                entry = policy.levels[0]
            return float(entry["timeout_minutes"])
        rule = next((r for r in self._monitor.get_rules() if r.rule_id == alert.rule_id), None)
        return (
            None
            if rule is None or rule.escalation_after_minutes is None
            else float(rule.escalation_after_minutes)
        )

    def _channels(self, alert: Alert, level: int) -> list[str]:
        policy = self.get_policy(alert.org_id)
        entry = policy.level(level) if policy is not None else None
        if entry is not None:
            return list(entry.get("channels") or [])
        return self._monitor.channels_for(alert)

    def _max_steps(self, org_id: str) -> int:
        policy = self.get_policy(org_id)
        return policy.max_escalations if policy is not None else DEFAULT_MAX_ESCALATIONS

    def due_step(self, alert: Alert, now: datetime) -> tuple[str, int] | None:
        """The automatic step ``alert`` is due for at ``now``: ("escalate", level),
        ("repeat", level) or None."""
        if alert.status not in (AlertStatus.OPEN, AlertStatus.ESCALATED):
            return None
        automatic = sum(1 for h in alert.escalation_history if h.get("automatic"))
        if automatic >= self._max_steps(alert.org_id):
            return None
        since = parse_time(
            alert.metadata.get(META_LEVEL_SINCE) or alert.created_at, field=META_LEVEL_SINCE
        )
        next_level = self._next_level(alert)
        if next_level is not None:
            timeout = self._timeout_minutes(alert)
            if timeout is not None and now >= since + timedelta(minutes=timeout):
                return ("escalate", next_level)
            return None
        policy = self.get_policy(alert.org_id)
        repeat = policy.repeat_after_minutes if policy is not None else None
        if repeat is not None and now >= since + timedelta(minutes=repeat):
            return ("repeat", int(alert.escalation_level))
        return None

    # ------------------------------------------------------------ steps
    async def check_escalations(self) -> list[Alert]:
        """Escalate (or re-notify) every unacknowledged alert whose level timed out.

        Returns:
            Alerts that were escalated or re-notified by this call.
        """
        now = self._monitor.now()
        stepped: list[Alert] = []
        for alert in await self._monitor.store.list_alerts(None):
            step = self.due_step(alert, now)
            if step is None:
                continue
            kind, level = step
            done = await self._step(alert, kind, level, "timeout", "system", automatic=True)
            if done is not None:
                stepped.append(done)
        return stepped

    async def escalate_alert(
        self, alert_id: str, reason: str = "timeout", *, actor: str = "system"
    ) -> Alert:
        """Manually escalate an alert to the next level.

        Raises:
            KeyError: If alert not found.
            ValueError: If already at the top level, or the alert is resolved/suppressed.
        """
        for _ in range(5):
            alert = await self._monitor.get_alert(alert_id)
            if alert.status in (AlertStatus.RESOLVED, AlertStatus.SUPPRESSED):
                raise IllegalTransitionError(
                    f"cannot escalate an alert that is {alert.status.value}"
                )
            level = self._next_level(alert)
            if level is None:
                raise IllegalTransitionError(
                    f"alert {alert_id!r} is already at the top escalation level "
                    f"L{self._top_level(alert.org_id)}"
                )
            done = await self._step(alert, "escalate", level, reason, actor, automatic=False)
            if done is not None:
                return done
        raise IllegalTransitionError(f"alert {alert_id!r} kept changing; try again")

    async def _step(
        self, alert: Alert, kind: str, level: int, reason: str, actor: str, *, automatic: bool
    ) -> Alert | None:
        channels = self._channels(alert, level)
        entry: dict[str, Any] = {
            "action": kind,
            "from_level": int(alert.escalation_level),
            "to_level": level,
            "reason": str(reason)[:512],
            "actor": actor,
            "automatic": automatic,
            "channels": channels,
        }

        def mutate(target: Alert, now: datetime) -> None:
            target.escalation_level = EscalationLevel(level)
            target.metadata[META_LEVEL_SINCE] = iso(now)
            target.escalation_history.append({**entry, "at": iso(now)})

        action, notice = ("escalate", "escalated") if kind == "escalate" else ("update", "repeated")
        notifier = self._monitor.notifier
        updated = await self._monitor._transition(
            alert.alert_id,
            action,
            actor,
            mutate,
            note=entry["reason"],
            expected=alert,
            notify=notifier.owed(notice, channels),
        )
        if updated is None:
            return None  # another replica (or a user) changed it first
        log.info("alert_escalated", alert_id=alert.alert_id, level=level, kind=kind)
        notifier.dispatch(updated, channels, notice)
        if self._callback is not None:
            try:
                self._callback(updated, EscalationLevel(level))
            except Exception:  # a faulty in-process hook must not stop escalations; logged
                log.exception("escalation_callback_failed", alert_id=alert.alert_id)
        return updated

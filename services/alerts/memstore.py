"""``InMemoryAlertStore``: the ``AlertStore`` of one process (the seed's bare constructor).

An ``asyncio.Lock`` makes each operation (including its audit write, its outbox entry and its
notification intents) atomic, as a PostgreSQL transaction would. Outbox, intents and
notification claims live in ``_memdelivery``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.alerts._memdelivery import MemDeliveryMixin
from services.alerts._tracker import IncidentKey, TrackedIncident
from services.alerts.models import Alert, AlertRule, AlertStatus, EscalationPolicy
from services.alerts.rules import OutcomeLog
from services.alerts.store import (
    BreachMark,
    Change,
    InsertOutcome,
    Notify,
    OpenKey,
    PolicySeq,
    StaleTransitionError,
)
from services.audit import AuditLogger

__all__ = ["InMemoryAlertStore"]


class InMemoryAlertStore(MemDeliveryMixin):
    """``AlertStore`` in this process.

    Args:
        audit: the audit logger changes are recorded with.
        outbox: queue every change for publication (off when nothing publishes, so the queue
            cannot grow without bound).
    """

    def __init__(self, audit: AuditLogger, *, outbox: bool = True) -> None:
        self.audit = audit
        self._lock = asyncio.Lock()
        self._alerts: dict[str, Alert] = {}
        self._open: dict[OpenKey, str] = {}
        self._last_resolved: dict[OpenKey, datetime] = {}
        self._rules: dict[str, AlertRule] = {}
        self._policies: dict[str, EscalationPolicy] = {}
        self._suppressions: dict[str, dict[str, Any]] = {}
        self._incidents: dict[IncidentKey, TrackedIncident] = {}
        self._policy_seq: dict[str, int] = {}
        self._outcomes = OutcomeLog()
        self._outcome_keys: set[tuple[str, str, str]] = set()
        self._init_delivery(outbox)

    async def migrate(self) -> None:
        """Nothing to create."""

    async def _log(
        self, change: Change, entity_type: str, entity_id: str, org_id: str | None
    ) -> None:
        await self.audit.log(
            change.actor,
            change.action,
            entity_type,
            entity_id,
            before=change.before,
            after=change.after,
            org_id=org_id,
            at=change.at,
        )

    def _advance_policy(self, policy_seq: PolicySeq | None) -> None:
        if policy_seq is None:
            return
        org_id, sequence = policy_seq
        if sequence <= self._policy_seq.get(org_id, -1):
            raise StaleTransitionError(f"policy transition {sequence} of {org_id} already applied")
        self._policy_seq[org_id] = sequence

    async def insert_alert(
        self,
        alert: Alert,
        change: Change,
        *,
        cooldown_since: datetime | None,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> InsertOutcome:
        """See ``AlertStore.insert_alert``."""
        key = (alert.org_id, alert.rule_id, alert.subject_key)
        async with self._lock:
            self._advance_policy(policy_seq)
            if key in self._open:
                return "open"
            last = self._last_resolved.get(key)
            if cooldown_since is not None and last is not None and last > cooldown_since:
                return "cooling"
            await self._log(change, "alert", alert.alert_id, alert.org_id)
            self._alerts[alert.alert_id] = copy.deepcopy(alert)
            self._open[key] = alert.alert_id
            self._queue(alert, notify)
            return "inserted"

    async def update_alert(
        self,
        alert: Alert,
        change: Change,
        *,
        expected_seq: int,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> bool:
        """See ``AlertStore.update_alert``."""
        async with self._lock:
            stored = self._alerts.get(alert.alert_id)
            if stored is None or stored.seq != expected_seq:
                return False
            self._advance_policy(policy_seq)
            await self._log(change, "alert", alert.alert_id, alert.org_id)
            self._alerts[alert.alert_id] = copy.deepcopy(alert)
            if alert.status is AlertStatus.RESOLVED:
                key = (alert.org_id, alert.rule_id, alert.subject_key)
                self._open.pop(key, None)
                if alert.resolved_at is not None:
                    self._last_resolved[key] = alert.resolved_at
            self._queue(alert, notify)
            return True

    async def policy_seq(self, org_id: str) -> int | None:
        """See ``AlertStore.policy_seq``."""
        return self._policy_seq.get(org_id)

    async def claim_policy_seq(self, org_id: str, sequence: int) -> bool:
        """See ``AlertStore.claim_policy_seq``."""
        async with self._lock:
            try:
                self._advance_policy((org_id, sequence))
            except StaleTransitionError:
                return False
            return True

    async def get_alert(self, alert_id: str) -> Alert | None:
        """See ``AlertStore.get_alert``."""
        alert = self._alerts.get(alert_id)
        return None if alert is None else copy.deepcopy(alert)

    async def list_alerts(
        self, org_id: str | None, *, active_only: bool = True, incident_id: str | None = None
    ) -> list[Alert]:
        """See ``AlertStore.list_alerts``."""
        return [
            copy.deepcopy(a)
            for a in self._alerts.values()
            if (org_id is None or a.org_id == org_id)
            and (a.is_active or not active_only)
            and (incident_id is None or a.incident_id == incident_id)
        ]

    async def active_keys(self) -> set[OpenKey]:
        """See ``AlertStore.active_keys``."""
        return set(self._open)

    async def save_rule(self, rule: AlertRule, change: Change) -> None:
        """See ``AlertStore.save_rule``."""
        async with self._lock:
            await self._log(change, "alert_rule", rule.rule_id, rule.org_id)
            self._rules[rule.rule_id] = copy.deepcopy(rule)

    async def delete_rule(self, rule_id: str, change: Change) -> bool:
        """See ``AlertStore.delete_rule``."""
        async with self._lock:
            rule = self._rules.get(rule_id)
            if rule is None:
                return False
            await self._log(change, "alert_rule", rule_id, rule.org_id)
            del self._rules[rule_id]
            return True

    async def load_rules(self) -> list[AlertRule]:
        """See ``AlertStore.load_rules``."""
        return [copy.deepcopy(r) for r in self._rules.values()]

    async def save_policy(self, org_id: str, policy: EscalationPolicy, change: Change) -> None:
        """See ``AlertStore.save_policy``."""
        async with self._lock:
            await self._log(change, "escalation_policy", org_id, org_id)
            self._policies[org_id] = copy.deepcopy(policy)

    async def load_policies(self) -> dict[str, EscalationPolicy]:
        """See ``AlertStore.load_policies``."""
        return copy.deepcopy(self._policies)

    async def save_suppression(self, record: dict[str, Any], change: Change) -> None:
        """See ``AlertStore.save_suppression``."""
        async with self._lock:
            await self._log(change, "alert_suppression", record["suppression_id"], record["org_id"])
            self._suppressions[record["suppression_id"]] = dict(record)

    async def delete_suppression(self, suppression_id: str, change: Change) -> bool:
        """See ``AlertStore.delete_suppression``."""
        async with self._lock:
            record = self._suppressions.get(suppression_id)
            if record is None:
                return False
            await self._log(change, "alert_suppression", suppression_id, record["org_id"])
            del self._suppressions[suppression_id]
            return True

    async def load_suppressions(self, now: datetime) -> list[dict[str, Any]]:
        """See ``AlertStore.load_suppressions``."""
        return [dict(r) for r in self._suppressions.values() if r["expires_at"] > now.timestamp()]

    async def save_incident(self, incident: TrackedIncident) -> None:
        """See ``AlertStore.save_incident``."""
        self._incidents[incident.key] = incident

    async def delete_incident(self, key: IncidentKey) -> None:
        """See ``AlertStore.delete_incident``."""
        self._incidents.pop(key, None)

    async def load_incidents(self) -> list[TrackedIncident]:
        """See ``AlertStore.load_incidents``."""
        return list(self._incidents.values())

    # ------------------------------------------------------------ outcomes
    async def finish_incident(
        self,
        key: IncidentKey,
        *,
        arrived_at: float | None,
        judge: Callable[[TrackedIncident], bool],
    ) -> TrackedIncident | None:
        """See ``AlertStore.finish_incident``."""
        incident = self._incidents.pop(key, None)
        breach = (*key, "breach")
        counted = breach in self._outcome_keys
        self._outcome_keys.discard(breach)
        arrival = (*key, "arrival")
        if incident is not None and arrived_at is not None and arrival not in self._outcome_keys:
            self._outcome_keys.add(arrival)
            self._outcomes.record(
                key[0],
                incident.region,
                met=judge(incident),
                at=arrived_at,
                arrived=True,
                streak=not counted,
            )
        return incident

    async def record_breaches(self, marks: list[BreachMark]) -> list[IncidentKey]:
        """See ``AlertStore.record_breaches``."""
        counted: list[IncidentKey] = []
        for key, region, at in marks:
            mark = (*key, "breach")
            if mark in self._outcome_keys:
                continue
            self._outcome_keys.add(mark)
            self._outcomes.record(key[0], region, met=False, at=at, arrived=False, streak=True)
            counted.append(key)
        return counted

    async def outcome_view(self, since: float) -> OutcomeLog:
        """See ``AlertStore.outcome_view`` (the live log: it filters by time itself)."""
        return self._outcomes

    async def prune_outcomes(self, before: float) -> int:
        """Nothing to do: the log is bounded."""
        return 0

"""Where the alerting service keeps what must last: the ``AlertStore`` port and an in-memory one.

Every alert state change goes through ``insert_alert`` / ``update_alert`` together with a
``Change`` (who, what, when, before, after); the store writes the change to the ``AuditLogger``
*in the same transaction* as the alert row (``PostgresAlertStore``), so the trail and the state
never disagree. The same two calls decide races between replicas: ``insert_alert`` refuses a
second open alert for one (org, rule, subject) and an alert still cooling down after a resolve,
``update_alert`` applies only when the alert's change sequence is still the one the caller read
(the fencing step that makes an escalation happen once).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from services.alerts._tracker import IncidentKey, TrackedIncident
from services.alerts.models import Alert, AlertRule, AlertStatus, EscalationPolicy
from services.audit import AuditLogger

__all__ = ["AlertStore", "Change", "InMemoryAlertStore", "InsertOutcome", "OpenKey"]

InsertOutcome = Literal["inserted", "open", "cooling"]
OpenKey = tuple[str, str, str]  # (org_id, rule_id, subject_key)


@dataclass(frozen=True, slots=True)
class Change:
    """One audited state change: written to the audit trail beside the row it changes."""

    actor: str
    action: str
    at: datetime
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class AlertStore(Protocol):
    """The persistence port of ``SLAMonitorService`` (PostgreSQL or in-memory)."""

    audit: AuditLogger

    async def migrate(self) -> None:
        """Create the schema (idempotent)."""
        ...

    async def insert_alert(
        self, alert: Alert, change: Change, *, cooldown_since: datetime | None
    ) -> InsertOutcome:
        """Store a new alert unless one is open for its key or one was resolved after
        ``cooldown_since`` (then ``"open"`` / ``"cooling"`` and nothing is written)."""
        ...

    async def update_alert(self, alert: Alert, change: Change, *, expected_seq: int) -> bool:
        """Replace the stored alert if its sequence is still ``expected_seq``; False if not."""
        ...

    async def get_alert(self, alert_id: str) -> Alert | None:
        """The stored alert, if any."""
        ...

    async def list_alerts(
        self, org_id: str | None, *, active_only: bool = True, incident_id: str | None = None
    ) -> list[Alert]:
        """Alerts of ``org_id`` (every org when None; only ``incident_id``'s when given),
        oldest first."""
        ...

    async def active_keys(self) -> set[OpenKey]:
        """(org, rule, subject) of every unresolved alert."""
        ...

    async def save_rule(self, rule: AlertRule, change: Change) -> None:
        """Insert or replace a rule."""
        ...

    async def delete_rule(self, rule_id: str, change: Change) -> bool:
        """Delete a rule; False when it was not stored."""
        ...

    async def load_rules(self) -> list[AlertRule]:
        """Every stored rule."""
        ...

    async def save_policy(self, org_id: str, policy: EscalationPolicy, change: Change) -> None:
        """Insert or replace an org's escalation policy."""
        ...

    async def load_policies(self) -> dict[str, EscalationPolicy]:
        """Every org's escalation policy."""
        ...

    async def save_suppression(self, record: dict[str, Any], change: Change) -> None:
        """Store a suppression record (see ``AlertSuppressionManager``)."""
        ...

    async def delete_suppression(self, suppression_id: str, change: Change) -> bool:
        """Delete a suppression; False when it was not stored."""
        ...

    async def load_suppressions(self, now: datetime) -> list[dict[str, Any]]:
        """Suppressions not expired at ``now``."""
        ...

    async def save_incident(self, incident: TrackedIncident) -> None:
        """Remember an active incident (so a restarted worker keeps watching it)."""
        ...

    async def delete_incident(self, key: IncidentKey) -> None:
        """Forget an incident that arrived, closed or was cancelled."""
        ...

    async def load_incidents(self) -> list[TrackedIncident]:
        """Every remembered active incident."""
        ...

    async def claim_notification(self, alert_id: str, seq: int, channel: str) -> bool:
        """Claim the right to send (alert, change, channel); False when someone already has."""
        ...

    async def record_delivery(
        self, alert: Alert, seq: int, channel: str, outcome: dict[str, Any], change: Change
    ) -> None:
        """Record a delivery's outcome (and audit it)."""
        ...


class InMemoryAlertStore:
    """``AlertStore`` in this process: the seed's bare ``SLAMonitorService()`` uses it.

    An ``asyncio.Lock`` makes each operation (including its audit write) atomic, as a
    PostgreSQL transaction would.
    """

    def __init__(self, audit: AuditLogger) -> None:
        self.audit = audit
        self._lock = asyncio.Lock()
        self._alerts: dict[str, Alert] = {}
        self._open: dict[OpenKey, str] = {}
        self._last_resolved: dict[OpenKey, datetime] = {}
        self._rules: dict[str, AlertRule] = {}
        self._policies: dict[str, EscalationPolicy] = {}
        self._suppressions: dict[str, dict[str, Any]] = {}
        self._incidents: dict[IncidentKey, TrackedIncident] = {}
        self._claims: dict[tuple[str, int, str], dict[str, Any] | None] = {}

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

    async def insert_alert(
        self, alert: Alert, change: Change, *, cooldown_since: datetime | None
    ) -> InsertOutcome:
        """See ``AlertStore.insert_alert``."""
        key = (alert.org_id, alert.rule_id, alert.subject_key)
        async with self._lock:
            if key in self._open:
                return "open"
            last = self._last_resolved.get(key)
            if cooldown_since is not None and last is not None and last > cooldown_since:
                return "cooling"
            await self._log(change, "alert", alert.alert_id, alert.org_id)
            self._alerts[alert.alert_id] = copy.deepcopy(alert)
            self._open[key] = alert.alert_id
            return "inserted"

    async def update_alert(self, alert: Alert, change: Change, *, expected_seq: int) -> bool:
        """See ``AlertStore.update_alert``."""
        async with self._lock:
            stored = self._alerts.get(alert.alert_id)
            if stored is None or stored.seq != expected_seq:
                return False
            await self._log(change, "alert", alert.alert_id, alert.org_id)
            self._alerts[alert.alert_id] = copy.deepcopy(alert)
            if alert.status is AlertStatus.RESOLVED:
                key = (alert.org_id, alert.rule_id, alert.subject_key)
                self._open.pop(key, None)
                if alert.resolved_at is not None:
                    self._last_resolved[key] = alert.resolved_at
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

    async def claim_notification(self, alert_id: str, seq: int, channel: str) -> bool:
        """See ``AlertStore.claim_notification``."""
        key = (alert_id, seq, channel)
        if key in self._claims:
            return False
        self._claims[key] = None
        return True

    async def record_delivery(
        self, alert: Alert, seq: int, channel: str, outcome: dict[str, Any], change: Change
    ) -> None:
        """See ``AlertStore.record_delivery``."""
        async with self._lock:
            await self._log(change, "alert", alert.alert_id, alert.org_id)
            self._claims[(alert.alert_id, seq, channel)] = dict(outcome)

    def deliveries(self) -> dict[tuple[str, int, str], dict[str, Any] | None]:
        """Every claimed notification and its outcome (None while in flight); for tests."""
        return dict(self._claims)

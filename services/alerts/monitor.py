"""``SLAMonitorService``: watches active incidents against their SLA and runs alert lifecycles.

The seed's constructor still works bare (``SLAMonitorService()``): everything is then kept in
this process (``InMemoryAlertStore``, an in-memory ``AuditLogger``, ``InProcessHotState``) and
the ``notification_callback`` is the only notification. A worker gives it collaborators through
keyword-only arguments: ``store`` (``PostgresAlertStore``: rules, alerts, suppressions, policies,
active incidents and the audit trail in the audit database), ``hot_state`` (``RedisHotState``:
cool-downs and suppressions shared by replicas), ``channels`` (the notification registry),
``publisher`` (every alert state change onto NATS, through the store's transactional outbox:
see ``services.alerts.outbox``), ``clock`` (tests inject one), ``replica_id`` (who claims
notifications).

Which alerts exist is decided by the store (one open alert per rule and subject; a cool-down
of ``suppression_window_minutes`` after a resolve), so two replicas raise each alert once.
Condition semantics are in ``services.alerts.rules``; legal state changes in ``_lifecycle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from ionveil.errors import ValidationError
from services.alerts._incidents import IncidentMixin
from services.alerts._policyalign import PolicyMixin
from services.alerts._raise import RaiseMixin
from services.alerts._serde import rule_to_dict
from services.alerts.escalation import EscalationManager
from services.alerts.hotstate import HotState, InProcessHotState
from services.alerts.memstore import InMemoryAlertStore
from services.alerts.models import (
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    EscalationLevel,
    EscalationPolicy,
    SLAViolation,
    validate_rule,
)
from services.alerts.notify import ChannelSender, Notifier
from services.alerts.outbox import OutboxPublisher, Publisher
from services.alerts.store import AlertStore
from services.alerts.suppression import AlertSuppressionManager
from services.audit import AuditLogger, InMemoryAuditStore
from services.compliance.sla import SLAMonitor

__all__ = [
    "Alert",
    "AlertRule",
    "AlertSeverity",
    "AlertStatus",
    "AlertSuppressionManager",
    "EscalationLevel",
    "EscalationManager",
    "EscalationPolicy",
    "SLAMonitorService",
    "SLAViolation",
]

log = structlog.get_logger(__name__)

PRUNE_INTERVAL_S = 3600.0
OUTCOME_RETENTION_S = 8 * 24 * 3600.0  # beyond the longest compliance window (7 days)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SLAMonitorService(RaiseMixin, IncidentMixin, PolicyMixin):
    """Monitors SLA compliance and generates alerts for violations.

    Args:
        check_interval_seconds: How often the background loop runs a check cycle.
        notification_callback: Called (in-process, synchronously) with each alert raised and
            not suppressed; an exception in it is logged and does not stop the monitor.
        store: persistence (default: in this process).
        audit: the audit logger of the default in-memory store (ignored with ``store``).
        channels: notification channel registry (default: none, callbacks only).
        hot_state: shared cool-down/suppression state (default: in this process).
        clock: returns the current aware time.
        publisher: awaited with the alert after every state change (NATS in the worker); the
            change is queued in the store's outbox first, so a failed publish is retried by
            ``flush_outbox``.
        suppressions: the suppression manager to consult (default: a new one).
        sla: the SLA calculator (default: ``SLAMonitor()`` on ``SLA_BY_SEVERITY``).
        default_channels: channels of org-level policy alerts when the org has no escalation
            policy.
        replica_id: this replica's name on notification claims (default: a random one).
    """

    def __init__(
        self,
        check_interval_seconds: float = 30.0,
        notification_callback: Callable[[Alert], None] | None = None,
        *,
        store: AlertStore | None = None,
        audit: AuditLogger | None = None,
        channels: ChannelSender | None = None,
        hot_state: HotState | None = None,
        clock: Callable[[], datetime] | None = None,
        publisher: Publisher | None = None,
        suppressions: AlertSuppressionManager | None = None,
        sla: SLAMonitor | None = None,
        default_channels: list[str] | None = None,
        replica_id: str | None = None,
    ) -> None:
        if not check_interval_seconds > 0:
            raise ValidationError("check_interval_seconds: must be > 0")
        self.check_interval_seconds = float(check_interval_seconds)
        self._callback = notification_callback
        self._clock = clock or _utcnow
        self._shared_store = store is not None
        self.store: AlertStore = store or InMemoryAlertStore(
            audit or AuditLogger(InMemoryAuditStore(), clock=self._clock),
            outbox=publisher is not None,
        )
        self.hot_state: HotState = hot_state or InProcessHotState()
        self.suppressions = suppressions or AlertSuppressionManager()
        self.suppressions.bind(store=store, hot_state=self.hot_state, clock=self._clock)
        self.sla = sla or SLAMonitor()
        self.notifier = Notifier(self.store, channels, clock=self._clock, replica_id=replica_id)
        self.outbox = OutboxPublisher(self.store, publisher)
        self._pruned_at: float | None = None
        self.default_channels = list(default_channels or [])
        self.escalation: EscalationManager | None = None
        self._rules: dict[str, AlertRule] = {}
        self._persisted_rules: set[str] = set()
        self._rules_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._init_raise_state()
        self._init_incident_state()
        self._init_policy_state()

    # ----------------------------------------------------------------- infrastructure
    @property
    def audit(self) -> AuditLogger:
        """The audit logger every state change is recorded with."""
        return self.store.audit

    def now(self) -> datetime:
        """The service clock's current time."""
        return self._clock()

    async def start(self) -> None:
        """Start the background monitoring loop (a check cycle every interval)."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="alerts-loop")

    async def stop(self) -> None:
        """Stop the monitoring loop gracefully and wait for notifications in flight."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.notifier.drain()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive one bad cycle; the error is logged
                log.exception("alerts_cycle_failed")
            await asyncio.sleep(self.check_interval_seconds)

    async def run_cycle(self, now: datetime | None = None) -> list[Alert]:
        """One pass: refresh shared state, check every active incident, then escalations,
        then re-send notifications whose sender vanished or whose retry is due.

        Returns:
            The alerts raised by the incident and org checks (escalations are not included).
        """
        if self._shared_store:
            await self.refresh()
        raised = await self.check_active_incidents(now)
        if self.escalation is not None:
            await self.escalation.check_escalations()
        await self.notifier.sweep()
        await self._prune()
        return raised

    async def _prune(self) -> None:
        mono = asyncio.get_running_loop().time()
        if self._pruned_at is not None and mono - self._pruned_at < PRUNE_INTERVAL_S:
            return
        self._pruned_at = mono
        await self.store.prune_outcomes(self.now().timestamp() - OUTCOME_RETENTION_S)

    async def flush_outbox(self, *, min_age_s: float = 0.0) -> int:
        """Publish the alert changes left in the outbox (see ``services.alerts.outbox``).

        Returns:
            How many were published (failures are logged and left for the next flush).
        """
        return await self.outbox.flush(min_age_s=min_age_s)

    async def load_state(self) -> None:
        """Load everything a restarted worker needs from the store (rules, policies,
        suppressions, active incidents, open alerts)."""
        await self.store.migrate()
        await self.refresh()
        if self.escalation is not None:
            for org_id, policy in (await self.store.load_policies()).items():
                self.escalation.set_policy(org_id, policy)

    async def refresh(self) -> None:
        """Re-read what other replicas may have changed: rules, suppressions, open alerts and
        active incidents."""
        stored = {r.rule_id: r for r in await self.store.load_rules()}
        with self._rules_lock:
            for rule_id in self._persisted_rules - stored.keys():
                self._rules.pop(rule_id, None)
            self._rules.update(stored)
            self._persisted_rules = set(stored)
        await self.suppressions.refresh()
        self._open_keys = await self.store.active_keys()
        # Replicas share the incidents durable: each sees some events, all see the table.
        self.incidents.replace_all(await self.store.load_incidents())

    # ----------------------------------------------------------------- rules
    def add_rule(self, rule: AlertRule) -> None:
        """Add or update an alert rule (in this process; ``save_rule`` also persists it).

        Raises:
            ValidationError: the rule is invalid (every problem named).
        """
        validate_rule(rule)
        with self._rules_lock:
            self._rules[rule.rule_id] = rule

    def remove_rule(self, rule_id: str) -> bool:
        """Remove an alert rule; True if removed, False if not found."""
        with self._rules_lock:
            return self._rules.pop(rule_id, None) is not None

    def get_rules(self, org_id: str | None = None) -> list[AlertRule]:
        """All rules, or those applying to ``org_id`` (its own plus every-org rules)."""
        with self._rules_lock:
            rules = list(self._rules.values())
        if org_id is not None:
            rules = [r for r in rules if r.org_id is None or r.org_id == org_id]
        return sorted(rules, key=lambda r: r.rule_id)

    def _active_rules(self) -> list[AlertRule]:
        with self._rules_lock:
            return [r for r in self._rules.values() if r.enabled]

    async def save_rule(self, rule: AlertRule, *, actor: str = "system") -> None:
        """``add_rule``, then persist it (audited) for every replica."""
        self.add_rule(rule)
        await self.store.save_rule(
            rule, self._change_record(actor, "rule.saved", after=rule_to_dict(rule))
        )
        with self._rules_lock:
            self._persisted_rules.add(rule.rule_id)

    async def delete_rule(self, rule_id: str, *, actor: str = "system") -> bool:
        """``remove_rule``, and delete it from the store (audited)."""
        removed = self.remove_rule(rule_id)
        stored = await self.store.delete_rule(rule_id, self._change_record(actor, "rule.removed"))
        with self._rules_lock:
            self._persisted_rules.discard(rule_id)
        return removed or stored

    # ----------------------------------------------------------------- queries
    async def get_active_alerts(
        self,
        org_id: str,
        severity: AlertSeverity | None = None,
        status: AlertStatus | None = None,
    ) -> list[Alert]:
        """Unresolved alerts of an org (resolved ones too when ``status`` is RESOLVED),
        optionally filtered by severity and status, oldest first."""
        alerts = await self.store.list_alerts(
            org_id, active_only=status is not AlertStatus.RESOLVED
        )
        return [
            a
            for a in alerts
            if (severity is None or a.severity is severity)
            and (status is None or a.status is status)
        ]

    async def get_alert(self, alert_id: str) -> Alert:
        """One alert by id.

        Raises:
            KeyError: (``NotFoundError``) no such alert.
        """
        return await self._load(alert_id)

    # ----------------------------------------------------------------- lifecycle
    async def acknowledge_alert(
        self, alert_id: str, user_id: str, note: str | None = None
    ) -> Alert:
        """Acknowledge an alert: it stops escalating on its own.

        Raises:
            KeyError: If alert not found.
            ValueError: If alert already resolved (or otherwise not acknowledgeable).
        """
        self._check_actor(user_id)

        def mutate(alert: Alert, now: datetime) -> None:
            alert.acknowledged_at = now
            alert.acknowledged_by = user_id

        return await self._transition(alert_id, "acknowledge", user_id, mutate, note=note)

    async def resolve_alert(self, alert_id: str, user_id: str, resolution_note: str) -> Alert:
        """Resolve an alert; the rule then cools down for ``suppression_window_minutes``.

        Raises:
            KeyError: If alert not found.
            ValueError: If already resolved, or the note is empty.
        """
        self._check_actor(user_id)
        if not isinstance(resolution_note, str) or not resolution_note.strip():
            raise ValidationError("resolution_note: required")

        def mutate(alert: Alert, now: datetime) -> None:
            alert.resolved_at = now
            alert.resolved_by = user_id
            alert.metadata["resolution_note"] = resolution_note[:4096]

        return await self._transition(alert_id, "resolve", user_id, mutate, note=resolution_note)

    @staticmethod
    def _check_actor(user_id: object) -> None:
        if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 256:
            raise ValidationError("user_id: must be a non-empty string of at most 256 chars")

    def org_channels(self, org_id: str) -> list[str]:
        """Channels of org-level news: the org policy's first level, else ``default_channels``."""
        policy: EscalationPolicy | None = (
            self.escalation.get_policy(org_id) if self.escalation else None
        )
        if policy is not None:
            first = policy.level(min(int(e["level"]) for e in policy.levels)) or {}
            return list(first.get("channels") or [])
        return list(self.default_channels)

    def channels_for(self, alert: Alert) -> list[str]:
        """Where news of ``alert`` goes: its rule's channels, else ``org_channels``."""
        with self._rules_lock:
            rule = self._rules.get(alert.rule_id)
        if rule is not None:
            return list(rule.notification_channels)
        return self.org_channels(alert.org_id)

    def _cooldown_until(self, rule_id: str, resolved_at: datetime) -> datetime:
        with self._rules_lock:
            rule = self._rules.get(rule_id)
        window = rule.suppression_window_minutes if rule is not None else 0
        return resolved_at + timedelta(minutes=window)

    def _fire_callback(self, alert: Alert) -> None:
        if self._callback is None:
            return
        try:
            self._callback(alert)
        except Exception:  # a faulty in-process hook must not break the monitor; logged
            log.exception("notification_callback_failed", alert_id=alert.alert_id)

    async def _publish(self, alert: Alert) -> None:
        """Publish a committed change now; on failure it stays in the outbox (logged)."""
        await self.outbox.publish(alert)

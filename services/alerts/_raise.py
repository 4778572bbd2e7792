"""Raising alerts and applying state changes: the part of ``SLAMonitorService`` that writes.

Every change goes: read the alert -> check the move in ``_lifecycle`` -> build the new alert
(sequence + 1, a history entry) -> ``store.update_alert(..., expected_seq=old)`` with the audit
record, the outbox entry and the notification intents (``notify=``, decided before the call)
in the same transaction -> publish (the outbox fast path) -> cool-down bookkeeping -> the
caller dispatches the notifications. A change caused by a policy transition carries
``policy_seq``: the store refuses it (``StaleTransitionError``) when that transition was
already applied. A lost race (the sequence moved on under us) is re-read and re-checked, or,
for fenced automatic steps such as timed escalation, simply dropped: someone else already did
it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ionveil.errors import ConflictError, NotFoundError
from services.alerts._lifecycle import IllegalTransitionError, next_status
from services.alerts._serde import alert_summary, iso
from services.alerts.models import (
    META_HISTORY,
    META_LEVEL_SINCE,
    META_SEQ,
    META_SUBJECT,
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
)
from services.alerts.store import Change, Notify, OpenKey, PolicySeq

if TYPE_CHECKING:
    from services.alerts.monitor import SLAMonitorService

__all__ = ["RaiseMixin"]

log = structlog.get_logger(__name__)

_RETRIES = 5
_RECENT_MAX = 10_000  # alerts whose latest copy is kept to save a read on the next change
_COOLDOWN_PREFIX = "cooldown"


def _cooldown_key(key: OpenKey) -> str:
    return ":".join((_COOLDOWN_PREFIX, *key))


class RaiseMixin:
    """Alert creation and state changes (mixed into ``SLAMonitorService``)."""

    def _init_raise_state(self: SLAMonitorService) -> None:
        self._open_keys: set[OpenKey] = set()
        self._cooldowns: dict[OpenKey, float] = {}
        self._recent: dict[str, Alert] = {}

    def _remember(self: SLAMonitorService, alert: Alert) -> None:
        """Keep the latest copy this process wrote: the next change of the alert skips a read
        (safe: the update is fenced on the sequence, a stale copy is re-read and re-checked)."""
        self._recent[alert.alert_id] = copy.deepcopy(alert)
        while len(self._recent) > _RECENT_MAX:
            del self._recent[next(iter(self._recent))]

    def _change_record(
        self: SLAMonitorService,
        actor: str,
        action: str,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> Change:
        return Change(actor, action, self.now(), before=before, after=after)

    async def _load(self: SLAMonitorService, alert_id: str) -> Alert:
        if not isinstance(alert_id, str) or not alert_id:
            raise NotFoundError("alert_id: must be a non-empty string")
        alert = await self.store.get_alert(alert_id)
        if alert is None:
            raise NotFoundError(f"alert {alert_id!r} not found")
        return alert

    def _is_open(self: SLAMonitorService, key: OpenKey) -> bool:
        return key in self._open_keys

    async def _cooling(self: SLAMonitorService, key: OpenKey, now_ts: float) -> bool:
        until = self._cooldowns.get(key)
        if until is not None:
            if until > now_ts:
                return True
            del self._cooldowns[key]
        if self.hot_state.shared:
            shared = await self.hot_state.get_deadline(_cooldown_key(key))
            if shared is not None and shared > now_ts:
                self._cooldowns[key] = shared
                return True
        return False

    async def _raise(
        self: SLAMonitorService,
        rule: AlertRule,
        org_id: str,
        subject_key: str,
        incident_id: str | None,
        title: str,
        description: str,
        severity: AlertSeverity,
        now: datetime,
        details: dict[str, Any],
        *,
        policy_seq: PolicySeq | None = None,
    ) -> Alert | None:
        """Open an alert unless one is open or cooling down for (org, rule, subject).

        Returns:
            The new alert, or None when none was raised (already open, cooling, or another
            replica won the race).
        """
        key = (org_id, rule.rule_id, subject_key)
        now_ts = now.timestamp()
        if key in self._open_keys or await self._cooling(key, now_ts):
            return None
        suppressed = await self.suppressions.is_suppressed_shared(org_id, rule.rule_id)
        status = AlertStatus.SUPPRESSED if suppressed else AlertStatus.OPEN
        action = "suppressed" if suppressed else "opened"
        alert = Alert(
            alert_id=f"alt-{uuid.uuid4().hex}",
            rule_id=rule.rule_id,
            org_id=org_id,
            incident_id=incident_id,
            severity=severity,
            status=status,
            title=title,
            description=description,
            created_at=now,
            updated_at=now,
            metadata={
                **details,
                META_SEQ: 1,
                META_SUBJECT: subject_key,
                META_LEVEL_SINCE: iso(now),
                META_HISTORY: [
                    {
                        "at": iso(now),
                        "actor": "system",
                        "action": action,
                        "from": None,
                        "to": status.value,
                        "note": None,
                    }
                ],
            },
        )
        window = rule.suppression_window_minutes
        outcome = await self.store.insert_alert(
            alert,
            Change("system", f"alert.{action}", now, after=alert_summary(alert)),
            cooldown_since=now - timedelta(minutes=window) if window > 0 else None,
            policy_seq=policy_seq,
            notify=None if suppressed else self.notifier.owed("opened", rule.notification_channels),
        )
        if outcome == "open":
            self._open_keys.add(key)
            return None
        if outcome == "cooling":
            self._cooldowns[key] = now_ts + min(window * 60.0, self.check_interval_seconds)
            return None
        self._open_keys.add(key)
        self._remember(alert)
        log.info(
            "alert_raised",
            alert_id=alert.alert_id,
            rule_id=rule.rule_id,
            org_id=org_id,
            subject=subject_key,
            status=status.value,
        )
        await self._publish(alert)
        if not suppressed:
            self._fire_callback(alert)
            self.notifier.dispatch(alert, rule.notification_channels, "opened")
        return alert

    async def _transition(
        self: SLAMonitorService,
        alert_id: str,
        action: str,
        actor: str,
        mutate: Callable[[Alert, datetime], None],
        *,
        note: str | None = None,
        expected: Alert | None = None,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> Alert | None:
        """Apply ``action`` to an alert (see the module docstring).

        Args:
            expected: the alert as the caller read it; the change is fenced on its sequence
                and nothing happens (None is returned) if it moved on meanwhile.
            notify: the notifications the change owes (``Notifier.owed``), stored with it;
                the caller dispatches them once the change is returned.

        Raises:
            NotFoundError: no such alert.
            IllegalTransitionError: the alert's status does not allow ``action``.
        """
        cached = self._recent.get(alert_id) if expected is None else None
        for _ in range(_RETRIES):
            current = expected or cached or await self._load(alert_id)
            try:
                status = next_status(current.status, action)
            except IllegalTransitionError:
                if cached is None:
                    raise
                cached = None  # the cached copy may be stale: decide on the stored one
                continue
            now = self.now()
            updated = copy.deepcopy(current)
            updated.status = status
            updated.updated_at = now
            mutate(updated, now)
            updated.metadata[META_SEQ] = current.seq + 1
            updated.metadata.setdefault(META_HISTORY, []).append(
                {
                    "at": iso(now),
                    "actor": actor,
                    "action": action,
                    "from": current.status.value,
                    "to": status.value,
                    "note": None if note is None else note[:1024],
                }
            )
            change = Change(
                actor,
                f"alert.{action}",
                now,
                before=alert_summary(current),
                after=alert_summary(updated),
            )
            if await self.store.update_alert(
                updated, change, expected_seq=current.seq, policy_seq=policy_seq, notify=notify
            ):
                self._remember(updated)
                await self._after_change(updated)
                return updated
            if expected is not None:
                return None
            cached = None
        raise ConflictError(f"alert {alert_id!r} kept changing; try again")

    async def _after_change(self: SLAMonitorService, alert: Alert) -> None:
        if alert.status is AlertStatus.RESOLVED:
            key = (alert.org_id, alert.rule_id, alert.subject_key)
            self._open_keys.discard(key)
            resolved = alert.resolved_at or alert.updated_at
            until = self._cooldown_until(alert.rule_id, resolved).timestamp()
            if until > resolved.timestamp():
                self._cooldowns[key] = until
                await self.hot_state.set_deadline(
                    _cooldown_key(key), until, ttl_s=until - resolved.timestamp()
                )
        log.info("alert_changed", alert_id=alert.alert_id, status=alert.status.value, seq=alert.seq)
        await self._publish(alert)

    async def _resolve_system(
        self: SLAMonitorService,
        alert_id: str,
        reason: str,
        *,
        policy_seq: PolicySeq | None = None,
    ) -> Alert | None:
        """Resolve an alert as actor ``system``; None when it is already resolved."""

        def mutate(target: Alert, now: datetime) -> None:
            target.resolved_at = now
            target.resolved_by = "system"
            target.metadata["resolution_note"] = reason

        try:
            return await self._transition(
                alert_id, "resolve", "system", mutate, note=reason, policy_seq=policy_seq
            )
        except IllegalTransitionError:
            return None  # resolved meanwhile (by a user or another replica)

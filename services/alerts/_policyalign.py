"""Policy alignment: the org-level alert that follows the org's live escalation policy.

The part of ``SLAMonitorService`` fed by ``ionveil.policy.transitions.<org>``. De-duplication is
durable and shared: the last applied transition sequence of each org is in the store
(``AlertStore.policy_seq``) and advances in the transaction of the alert change the transition
causes (``policy_seq=`` on ``insert_alert`` / ``update_alert``), so a transition redelivered to
any replica, before or after a restart, changes nothing (``StaleTransitionError``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from services.alerts._incidents import _text
from services.alerts._serde import iso, parse_time
from services.alerts.models import POLICY_SEVERITY, Alert, AlertRule, AlertSeverity
from services.alerts.store import PolicySeq, StaleTransitionError

if TYPE_CHECKING:
    from services.alerts.monitor import SLAMonitorService

__all__ = ["POLICY_RULE_ID", "PolicyMixin"]

log = structlog.get_logger(__name__)

POLICY_RULE_ID = "policy-transition"
"""Rule id of org-level alerts that follow the org's live policy (suppressible by pattern)."""


class PolicyMixin:
    """Policy alignment (mixed into ``SLAMonitorService``)."""

    def _init_policy_state(self: SLAMonitorService) -> None:
        # Last applied policy sequence per org (a cache of AlertStore.policy_seq).
        self._policy_seq: dict[str, int] = {}

    def _policy_rule(self: SLAMonitorService, org_id: str, severity: AlertSeverity) -> AlertRule:
        return AlertRule(
            POLICY_RULE_ID,
            "Live policy",
            "The org's live escalation policy",
            "threshold",
            {},
            severity,
            self.org_channels(org_id),
            suppression_window_minutes=0,
        )

    async def on_policy_transition(
        self: SLAMonitorService, org_id: str, payload: dict[str, Any]
    ) -> Alert | None:
        """Follow a transition of the org's live policy (``ionveil.policy.transitions.<org>``).

        A move to a policy above the first raises the org's policy alert, or updates its
        severity if one is open (normal -> info, watch -> warning, restricted -> critical,
        halted -> emergency; other names -> warning); a move back to ``normal`` resolves it
        as actor ``system``. A transition whose ``sequence`` is not newer than the last one
        applied for the org is ignored (a redelivery, to this or any replica, before or after
        a restart): the sequence is stored and advanced in the transaction of the alert
        change, so two replicas handed the same transition change the alert once.

        Returns:
            The alert raised or changed, or None.

        Raises:
            ValidationError: ``to`` missing or invalid, or a bad ``timestamp`` (named).
        """
        _text("org_id", org_id)
        target = _text("to", payload.get("to"))
        at = parse_time(payload.get("timestamp", self.now()), field="timestamp")
        sequence = payload.get("sequence")
        fence: PolicySeq | None = None
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            last = self._policy_seq.get(org_id)
            if last is None or sequence > last:
                last = await self.store.policy_seq(org_id)
            if last is not None and sequence <= last:
                self._policy_seq[org_id] = last
                log.info("policy_transition_repeat", org_id=org_id, sequence=sequence)
                return None
            fence = (org_id, sequence)
        try:
            changed = await self._follow_policy(org_id, payload, target, at, fence)
        except StaleTransitionError:  # another replica applied it first: nothing to do
            log.info("policy_transition_repeat", org_id=org_id, sequence=sequence)
            return None
        if fence is not None:
            self._policy_seq[org_id] = fence[1]
        return changed

    async def _follow_policy(
        self: SLAMonitorService,
        org_id: str,
        payload: dict[str, Any],
        target: str,
        at: datetime,
        fence: PolicySeq | None,
    ) -> Alert | None:
        """The alert change a transition causes, fenced on its sequence; a transition that
        changes no alert still records its sequence as applied."""
        severity = POLICY_SEVERITY.get(target, AlertSeverity.WARNING)
        current = [a for a in await self.store.list_alerts(org_id) if a.rule_id == POLICY_RULE_ID]
        details = {
            "policy": target,
            "from": payload.get("from"),
            "reason": str(payload.get("reason", ""))[:512],
            "sequence": payload.get("sequence"),
            "transition_time": iso(at),
        }
        changed: Alert | None
        if severity is AlertSeverity.INFO:
            changed = None
            if current:
                changed = await self._resolve_system(
                    current[0].alert_id, f"policy back to {target}", policy_seq=fence
                )
        elif not current:
            title = f"Org {org_id} policy is {target}"
            changed = await self._raise(
                self._policy_rule(org_id, severity),
                org_id,
                "policy",
                None,
                title,
                details["reason"] or title,
                severity,
                self.now(),
                {"policy_transition": details},
                policy_seq=fence,
            )
        else:
            changed = await self._update_policy_alert(current[0], severity, details, fence)
        if changed is None and fence is not None:
            await self.store.claim_policy_seq(*fence)
        return changed

    async def _update_policy_alert(
        self: SLAMonitorService,
        alert: Alert,
        severity: AlertSeverity,
        details: dict[str, Any],
        fence: PolicySeq | None,
    ) -> Alert | None:
        raised = _rank(severity) > _rank(alert.severity)
        channels = self.channels_for(alert)  # by rule and org: the same for the updated alert
        title = f"Org {alert.org_id} policy is {details['policy']}"

        def mutate(target: Alert, now: datetime) -> None:
            target.severity = severity
            target.title = title
            target.metadata["policy_transition"] = details

        updated = await self._transition(
            alert.alert_id,
            "update",
            "system",
            mutate,
            note=f"policy {details['from']} -> {details['policy']}",
            policy_seq=fence,
            notify=self.notifier.owed("severity_raised", channels) if raised else None,
        )
        if updated is not None and raised:
            self._fire_callback(updated)
            self.notifier.dispatch(updated, channels, "severity_raised")
        return updated


def _rank(severity: AlertSeverity) -> int:
    return list(AlertSeverity).index(severity)

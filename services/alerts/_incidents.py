"""Checking incidents and orgs against the rules, and following incident and policy events.

The part of ``SLAMonitorService`` that decides *when* alerts are raised or resolved on their
own. ``check_incident`` evaluates one incident; ``check_active_incidents`` evaluates every
tracked incident in one pass over ``ActiveIncidents`` (a binary search per rule and priority,
see ``_tracker``), raising exactly the alerts the per-incident path would.

Everything a decision depends on is shared through the store, so two replicas decide as one:
the tracked incidents (reloaded every cycle), the SLA outcomes behind ``pattern`` and
``threshold`` rules (``AlertStore.record_breaches`` / ``finish_incident`` / ``outcome_view``),
and (``_policyalign``) the last applied policy transition of each org.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ionveil.errors import ValidationError
from ionveil.models import IncidentStatus
from services.alerts._serde import iso, parse_time
from services.alerts._tracker import ActiveIncidents, IncidentKey, TrackedIncident
from services.alerts.models import (
    Alert,
    AlertRule,
    SLAViolation,
)
from services.alerts.rules import (
    INCIDENT_CONDITIONS,
    ORG_CONDITIONS,
    OutcomeView,
    incident_cutoff_minutes,
    incident_rule_fires,
    org_rule_fires,
    rule_priorities,
)

if TYPE_CHECKING:
    from services.alerts.monitor import SLAMonitorService

__all__ = ["IncidentMixin"]

log = structlog.get_logger(__name__)


def _text(name: str, value: object, limit: int = 256) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValidationError(f"{name}: must be a non-empty string of at most {limit} chars")
    return value


class IncidentMixin:
    """Incident tracking and rule evaluation (mixed into ``SLAMonitorService``)."""

    def _init_incident_state(self: SLAMonitorService) -> None:
        self.incidents = ActiveIncidents()
        # Breaches this replica knows are counted (a cache: the store counts each once).
        self._breach_recorded: set[IncidentKey] = set()

    # ------------------------------------------------------------ incident events
    async def track_incident(
        self: SLAMonitorService,
        org_id: str,
        incident_id: str,
        priority: int,
        dispatch_time: datetime,
        region: str | None = None,
    ) -> None:
        """Start watching a dispatched incident (persisted, so a restart keeps watching it).

        Raises:
            ValidationError: a field is invalid (named).
        """
        _text("org_id", org_id)
        _text("incident_id", incident_id)
        self.sla.target_minutes(priority)
        if region is not None:
            _text("region", region)
        dispatched = parse_time(dispatch_time, field="dispatch_time")
        incident = TrackedIncident(org_id, incident_id, priority, dispatched.timestamp(), region)
        self.incidents.add(incident)
        await self.store.save_incident(incident)

    async def on_incident_event(
        self: SLAMonitorService,
        org_id: str,
        incident_id: str,
        priority: int,
        status: str,
        timestamp: Any,
        region: str | None = None,
    ) -> list[Alert]:
        """Follow one ``ionveil.incidents.<org>`` event.

        ``dispatched`` starts the SLA clock; ``arrived`` records the outcome (met or not) and,
        like ``closed`` and ``cancelled``, stops watching the incident and resolves its SLA
        alerts as actor ``system``. ``opened`` (pending) needs nothing. Redelivered events are
        harmless: a second ``dispatched`` replaces the first, a second ``arrived`` finds
        nothing to do. The incident row and its outcome change in one store transaction.

        Returns:
            Alerts changed (resolved) or raised (org rules) by the event.

        Raises:
            ValidationError: a field is invalid (named).
        """
        try:
            state = IncidentStatus(status)
        except ValueError:
            raise ValidationError(
                f"status: must be one of {[s.value for s in IncidentStatus]}, got {status!r}"
            ) from None
        at = parse_time(timestamp, field="timestamp")
        if state is IncidentStatus.DISPATCHED:
            await self.track_incident(org_id, incident_id, priority, at, region)
            return []
        if state is IncidentStatus.OPENED:
            return []
        key = (org_id, incident_id)
        self.incidents.remove(key)
        self._breach_recorded.discard(key)

        def met(incident: TrackedIncident) -> bool:
            dispatched = datetime.fromtimestamp(incident.dispatch_ts, UTC)
            return not self.sla.is_breached(incident.priority, dispatched, at)

        arrived = state is IncidentStatus.ARRIVED
        await self.store.finish_incident(
            key, arrived_at=at.timestamp() if arrived else None, judge=met
        )
        changed: list[Alert] = []
        for alert in await self.store.list_alerts(org_id, incident_id=incident_id):
            resolved = await self._resolve_system(alert.alert_id, f"incident {state.value}")
            if resolved is not None:
                changed.append(resolved)
        if state is IncidentStatus.ARRIVED:
            changed.extend(await self._evaluate_org(org_id, self.now()))
        return changed

    # ------------------------------------------------------------ incident checks
    async def check_incident(
        self: SLAMonitorService,
        incident_id: str,
        org_id: str,
        priority: int,
        dispatch_time: datetime,
        current_time: datetime | None = None,
    ) -> list[Alert]:
        """Check a single incident for SLA compliance (and, when it has just breached, its
        org's ``pattern``/``threshold`` rules).

        Returns:
            Alerts generated (may be empty).

        Raises:
            ValidationError: invalid priority or naive datetimes.
        """
        now = current_time or self.now()
        target = self.sla.target_minutes(priority)
        elapsed = self.sla.elapsed_minutes(dispatch_time, now)
        tracked = self.incidents.get((org_id, incident_id))
        region = tracked.region if tracked is not None else None
        raised: list[Alert] = []
        for rule in self._active_rules():
            if rule.condition_type not in INCIDENT_CONDITIONS or not rule.applies_to(org_id):
                continue
            if (org_id, rule.rule_id, incident_id) in self._open_keys:
                continue
            if incident_rule_fires(rule, priority, target, elapsed):
                alert = await self._incident_alert(
                    rule, org_id, incident_id, priority, dispatch_time.timestamp(), now, region
                )
                if alert is not None:
                    raised.append(alert)
        if elapsed > target and await self._record_breach((org_id, incident_id), region, now):
            raised.extend(await self._evaluate_org(org_id, now))
        return raised

    async def _record_breach(
        self: SLAMonitorService, key: IncidentKey, region: str | None, now: datetime
    ) -> bool:
        """Count an incident's breach (once, across replicas); True when this call did."""
        if key in self._breach_recorded:
            return False
        self._breach_recorded.add(key)
        return bool(await self.store.record_breaches([(key, region, now.timestamp())]))

    async def _outcome_view(self: SLAMonitorService, now_ts: float) -> OutcomeView:
        windows = [
            float(r.threshold_config.get("window_minutes", 60))
            for r in self._active_rules()
            if r.condition_type == "threshold"
        ]
        return await self.store.outcome_view(now_ts - max([60.0, *windows]) * 60.0)

    async def check_active_incidents(
        self: SLAMonitorService, now: datetime | None = None
    ) -> list[Alert]:
        """Check every tracked incident in one pass (the check loop's cycle).

        Equivalent to ``check_incident`` on each tracked incident, but each (rule, priority)
        costs a binary search, and only incidents past a rule's cut-off are looked at.
        """
        now = now or self.now()
        now_ts = now.timestamp()
        raised: list[Alert] = []
        for rule in self._active_rules():
            if rule.condition_type not in INCIDENT_CONDITIONS:
                continue
            for priority in sorted(rule_priorities(rule)):
                target = self.sla.target_minutes(priority)
                cutoff, inclusive = incident_cutoff_minutes(rule, target)
                keys = self.incidents.dispatched_before(
                    priority, now_ts - cutoff * 60.0, inclusive=inclusive
                )
                for org_id, incident_id in keys:
                    if (rule.org_id is not None and org_id != rule.org_id) or (
                        (org_id, rule.rule_id, incident_id) in self._open_keys
                    ):
                        continue
                    incident = self.incidents.get((org_id, incident_id))
                    assert incident is not None
                    alert = await self._incident_alert(
                        rule,
                        org_id,
                        incident_id,
                        priority,
                        incident.dispatch_ts,
                        now,
                        incident.region,
                    )
                    if alert is not None:
                        raised.append(alert)
        breached_keys = self._breached_keys(now_ts)
        breaches = Counter(org for org, _ in breached_keys)
        marks = []
        for key in breached_keys:
            if key not in self._breach_recorded:
                incident = self.incidents.get(key)
                marks.append((key, incident.region if incident else None, now_ts))
        if marks:
            await self.store.record_breaches(marks)
        self._breach_recorded = set(breached_keys)
        if not any(r.condition_type in ORG_CONDITIONS for r in self._active_rules()):
            return raised
        view = await self._outcome_view(now_ts)
        orgs = set(breaches) | set(view.orgs())
        orgs.update(org for (org, _rule, _subject) in self._open_keys)
        for org_id in sorted(orgs):
            raised.extend(await self._evaluate_org(org_id, now, breaches.get(org_id, 0), view))
        return raised

    def _breached_keys(self: SLAMonitorService, now_ts: float) -> list[IncidentKey]:
        keys: list[IncidentKey] = []
        for priority in range(1, 6):
            cutoff = now_ts - self.sla.target_minutes(priority) * 60.0
            keys.extend(self.incidents.dispatched_before(priority, cutoff, inclusive=False))
        return keys

    def _breached(self: SLAMonitorService, now_ts: float) -> Counter[str]:
        return Counter(org for org, _ in self._breached_keys(now_ts))

    async def _incident_alert(
        self: SLAMonitorService,
        rule: AlertRule,
        org_id: str,
        incident_id: str,
        priority: int,
        dispatch_ts: float,
        now: datetime,
        region: str | None,
    ) -> Alert | None:
        target = self.sla.target_minutes(priority)
        elapsed = (now.timestamp() - dispatch_ts) / 60.0
        remaining_pct = 100.0 * (target - elapsed) / target
        details: dict[str, Any] = {
            "priority": priority,
            "sla_target_minutes": target,
            "elapsed_minutes": round(elapsed, 3),
            "remaining_pct": round(remaining_pct, 3),
            "dispatch_time": iso(datetime.fromtimestamp(dispatch_ts, UTC)),
            "region": region,
            "condition_type": rule.condition_type,
        }
        if rule.condition_type == "sla_breach":
            violation = SLAViolation(
                incident_id, org_id, priority, target, elapsed, now, elapsed / target
            )
            details["violation"] = {**asdict(violation), "breach_time": iso(now)}
            title = f"SLA breach: incident {incident_id} (P{priority})"
            description = (
                f"{elapsed:.1f} min since dispatch, target {target} min ({elapsed / target:.2f}x)"
            )
        else:
            title = f"SLA warning: incident {incident_id} (P{priority})"
            description = (
                f"{max(remaining_pct, 0.0):.0f}% of the {target} min target left "
                f"({elapsed:.1f} min elapsed)"
            )
        return await self._raise(
            rule, org_id, incident_id, incident_id, title, description, rule.severity, now, details
        )

    # ------------------------------------------------------------ org checks
    async def _evaluate_org(
        self: SLAMonitorService,
        org_id: str,
        now: datetime,
        open_breaches: int | None = None,
        view: OutcomeView | None = None,
    ) -> list[Alert]:
        changed: list[Alert] = []
        now_ts = now.timestamp()
        rules = [
            r
            for r in self._active_rules()
            if r.condition_type in ORG_CONDITIONS and r.applies_to(org_id)
        ]
        if rules and view is None:
            view = await self._outcome_view(now_ts)
        for rule in rules:
            assert view is not None
            if rule.condition_type == "pattern" and rule.threshold_config.get("scope") == "region":
                subjects = [(f"region:{r}", r) for r in view.regions(org_id)]
            else:
                subjects = [("org", None)]
            for subject, region in subjects:
                if open_breaches is None and rule.threshold_config.get("metric") == "open_breaches":
                    open_breaches = self._breached(now_ts).get(org_id, 0)
                fires, measure = org_rule_fires(
                    rule,
                    org_id,
                    region,
                    open_breaches=open_breaches or 0,
                    outcomes=view,
                    now=now_ts,
                )
                key = (org_id, rule.rule_id, subject)
                if fires:
                    where = f"region {region}" if region else f"org {org_id}"
                    alert = await self._raise(
                        rule,
                        org_id,
                        subject,
                        None,
                        f"{rule.name}: {where}",
                        ", ".join(f"{k} = {v:g}" for k, v in measure.items()),
                        rule.severity,
                        now,
                        {
                            "measure": measure,
                            "region": region,
                            "condition_type": rule.condition_type,
                        },
                    )
                elif key in self._open_keys:
                    alert = await self._resolve_subject(key, "condition cleared")
                else:
                    alert = None
                if alert is not None:
                    changed.append(alert)
        return changed

    async def _resolve_subject(
        self: SLAMonitorService, key: tuple[str, str, str], reason: str
    ) -> Alert | None:
        org_id, rule_id, subject = key
        for alert in await self.store.list_alerts(org_id):
            if alert.rule_id == rule_id and alert.subject_key == subject:
                return await self._resolve_system(alert.alert_id, reason)
        self._open_keys.discard(key)  # resolved elsewhere
        return None

"""Where the alerting service keeps what must last: the ``AlertStore`` port and its values.

Every alert state change goes through ``insert_alert`` / ``update_alert`` together with a
``Change`` (who, what, when, before, after); the store writes the change to the ``AuditLogger``
and the alert's publication to the outbox *in the same transaction* as the alert row, so the
trail, the state and what will be published never disagree. The same two calls decide races
between replicas: ``insert_alert`` refuses a second open alert for one (org, rule, subject) and
an alert still cooling down after a resolve, ``update_alert`` applies only when the alert's
change sequence is still the one the caller read (the fencing step that makes an escalation
happen once), and both refuse a policy transition whose sequence was already applied
(``StaleTransitionError``).

A change that must be notified is stored with ``notify=(kind, channels)``: the rows "this change
is owed on this channel" (notification intents, one per channel) are written in the same
transaction too, so a notification owed can no more be lost than the change itself. The
``Notifier`` claims them (``claim_notification``) right after the commit; ``reclaim_notifications``
hands over those nobody claimed (the process died, or the database went away in between).

Implementations: ``PostgresAlertStore`` (``services.alerts.postgres``) and
``InMemoryAlertStore`` (``services.alerts.memstore``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg

from ionveil.errors import ConflictError, TransientError
from services.alerts._tracker import IncidentKey, TrackedIncident
from services.alerts.models import Alert, AlertRule, EscalationPolicy
from services.alerts.rules import OutcomeView
from services.audit import AuditLogger

__all__ = [
    "INTENT_GRACE_S",
    "STORE_ERRORS",
    "AlertStore",
    "BreachMark",
    "Change",
    "InsertOutcome",
    "NotificationClaim",
    "Notify",
    "OpenKey",
    "OutboxEntry",
    "PolicySeq",
    "StaleTransitionError",
]

InsertOutcome = Literal["inserted", "open", "cooling"]
OpenKey = tuple[str, str, str]  # (org_id, rule_id, subject_key)
PolicySeq = tuple[str, int]  # (org_id, policy transition sequence)
BreachMark = tuple[IncidentKey, str | None, float]  # (incident key, region, epoch seconds)
Notify = tuple[str, Sequence[str]]  # (kind of change, channels it is owed on)

INTENT_GRACE_S = 5.0
"""Age after which ``reclaim_notifications`` takes an unclaimed intent (the notifier that wrote
it claims it at once; a sweep stealing it earlier would be harmless but needless)."""

STORE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,  # TimeoutError and refused connections included
    TransientError,
)
"""What a store raises while its database is unreachable (worth retrying later)."""


class StaleTransitionError(ConflictError):
    """A policy transition's sequence was already applied (a redelivery): nothing written."""


@dataclass(frozen=True, slots=True)
class Change:
    """One audited state change: written to the audit trail beside the row it changes."""

    actor: str
    action: str
    at: datetime
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One committed alert state change waiting to be published (``payload``: the alert)."""

    alert_id: str
    seq: int
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NotificationClaim:
    """The right, held until ``token`` is replaced, to send one (alert change, channel).

    ``round`` counts the delivery rounds already recorded (0 for the first send).
    """

    alert: Alert
    channel: str
    kind: str
    token: str
    round: int = 0


OutboxPublish = Callable[[OutboxEntry], Awaitable[None]]


class AlertStore(Protocol):
    """The persistence port of ``SLAMonitorService`` (PostgreSQL or in-memory)."""

    audit: AuditLogger

    async def migrate(self) -> None:
        """Create the schema (idempotent)."""
        ...

    async def insert_alert(
        self,
        alert: Alert,
        change: Change,
        *,
        cooldown_since: datetime | None,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> InsertOutcome:
        """Store a new alert (its outbox entry and, with ``notify``, its notification intents)
        unless one is open for its key or one was resolved after ``cooldown_since`` (then
        ``"open"`` / ``"cooling"``, nothing written).

        Raises:
            StaleTransitionError: ``policy_seq`` is not newer than the org's last applied
                transition (then nothing at all is written).
        """
        ...

    async def update_alert(
        self,
        alert: Alert,
        change: Change,
        *,
        expected_seq: int,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> bool:
        """Replace the stored alert (queue its publication and, with ``notify``, write its
        notification intents) if its sequence is still ``expected_seq``; False if not (nothing
        written).

        Raises:
            StaleTransitionError: as ``insert_alert``.
        """
        ...

    async def policy_seq(self, org_id: str) -> int | None:
        """The sequence of the org's last applied policy transition, if any."""
        ...

    async def claim_policy_seq(self, org_id: str, sequence: int) -> bool:
        """Record ``sequence`` as applied; False when it is not newer than the last one."""
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

    async def finish_incident(
        self,
        key: IncidentKey,
        *,
        arrived_at: float | None,
        judge: Callable[[TrackedIncident], bool],
    ) -> TrackedIncident | None:
        """Forget an incident that ended and, in the same transaction, record its outcome.

        With ``arrived_at`` (a unit arrived) the outcome ``judge(incident)`` (SLA met) counts
        for compliance rates, and for breach streaks unless the incident's breach was already
        counted by ``record_breaches``. Recorded once per incident, however often called.

        Returns:
            The incident as stored, or None when it was not (already finished, or unknown).
        """
        ...

    async def record_breaches(self, marks: list[BreachMark]) -> list[IncidentKey]:
        """Count each incident's first sighting past its SLA target as a breach (once per
        incident across replicas); returns the keys counted by this call."""
        ...

    async def outcome_view(self, since: float) -> OutcomeView:
        """Breach streaks and the arrivals at or after ``since`` (epoch seconds), as shared by
        every replica."""
        ...

    async def prune_outcomes(self, before: float) -> int:
        """Forget outcomes recorded before ``before`` (epoch seconds)."""
        ...

    async def drain_outbox(
        self, publish: OutboxPublish, *, limit: int = 500, min_age_s: float = 0.0
    ) -> int:
        """Publish queued changes at least ``min_age_s`` old, oldest first, through
        ``publish``; each is removed only after ``publish`` returned (the broker acked).
        Entries another replica is draining are skipped. A ``publish`` error stops the drain
        (what was published stays published) and is raised.

        Returns:
            How many entries were published.
        """
        ...

    async def mark_published(self, alert_id: str, seq: int) -> None:
        """Remove a published change from the outbox."""
        ...

    async def outbox_lag_s(self) -> float | None:
        """Age in seconds of the oldest unpublished change (None when the outbox is empty)."""
        ...

    async def claim_notification(
        self, alert: Alert, channel: str, kind: str, claimant: str
    ) -> NotificationClaim | None:
        """Claim (with a lease) the right to send ``alert``'s current change on ``channel``:
        take its unclaimed intent (or write the claim when no intent was written); None when
        someone already holds it."""
        ...

    async def reclaim_notifications(
        self,
        claimant: str,
        *,
        lease_s: float,
        intent_grace_s: float = INTENT_GRACE_S,
        limit: int = 100,
    ) -> list[NotificationClaim]:
        """Take over intents nobody claimed ``intent_grace_s`` after they were written, claims
        whose sender vanished (no outcome ``lease_s`` after the claim) and failed sends whose
        retry time has come; each is taken by one replica only."""
        ...

    async def record_delivery(
        self,
        claim: NotificationClaim,
        outcome: dict[str, Any],
        change: Change,
        *,
        retry_in_s: float | None,
    ) -> bool:
        """Record a delivery round's outcome (and audit it); a failed one is retried after
        ``retry_in_s`` (None: not again). False when the claim was taken over meanwhile
        (the outcome is still audited)."""
        ...

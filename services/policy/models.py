"""Values of the live policy service: outcomes fed in, per-org state kept, transitions out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ionveil.policy import PolicyTransition

__all__ = ["ApplyResult", "LiveOutcome", "OrgPolicyState", "OutboxEntry", "transition_payload"]


@dataclass(frozen=True, slots=True)
class LiveOutcome:
    """One dispatch outcome for an org's engine.

    Attributes:
        org: the org (the subject's ``<org>`` token).
        event_id: the dispatch event's id; an event is applied at most once per org.
        stream_seq: the message's sequence in the DISPATCH stream (kept as ``last_seq``).
        at: event time, epoch seconds (the outcome's time in the engine).
        success: ``sla_met`` of the event.
    """

    org: str
    event_id: str
    stream_seq: int
    at: float
    success: bool


@dataclass(frozen=True, slots=True)
class OrgPolicyState:
    """What is stored per org: the engine snapshot plus bookkeeping.

    Attributes:
        org: the org.
        version: bumped on every change; lets a cache notice another replica's write.
        last_seq: the highest DISPATCH stream sequence applied for this org.
        snapshot: ``PolicyEngine.snapshot()`` (its config included); ``None`` before the
            first outcome or configuration.
        updated_at: when the row last changed.
    """

    org: str
    version: int
    last_seq: int
    snapshot: dict[str, Any] | None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A transition committed with the state that caused it, waiting to be published.

    ``msg_id`` (``<org>-<sequence>``) is the ``Nats-Msg-Id``, so publishing an entry twice
    (after a crash between publish and delete, or by two replicas) stores it once.
    """

    org: str
    sequence: int
    payload: dict[str, Any]

    @property
    def msg_id(self) -> str:
        """The JetStream de-duplication id."""
        return f"{self.org}-{self.sequence}"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one batch did: outcomes applied, duplicates skipped, transitions committed."""

    applied: int
    duplicates: int
    transitions: tuple[OutboxEntry, ...]


def transition_payload(org: str, transition: PolicyTransition) -> dict[str, Any]:
    """The wire form on ``ionveil.policy.transitions.<org>``.

    ``PolicyTransition.as_dict()`` plus ``org_id``, ``is_escalation`` and an RFC 3339
    ``timestamp`` (ARCHITECTURE.md: times are RFC 3339 on output).
    """
    out = transition.as_dict()
    out["timestamp"] = datetime.fromtimestamp(transition.timestamp, UTC).isoformat()
    out["org_id"] = org
    out["is_escalation"] = transition.is_escalation
    return out

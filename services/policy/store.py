"""Where live policy state lasts: the store Protocol and an in-process implementation.

A store applies a batch in one unit of work: it locks the orgs' state, keeps only outcomes
whose event id it has never applied, lets the caller advance each org's engine, and saves the
new snapshot, the applied ids, ``last_seq`` and the resulting transitions (an outbox) together.
So a redelivered event counts once, and a transition is never lost between the state change
and its publication. ``PostgresPolicyStore`` (``services.policy.pg_store``) is the durable one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from services.policy.models import ApplyResult, LiveOutcome, OrgPolicyState, OutboxEntry

__all__ = ["Advance", "InMemoryPolicyStore", "PolicyStore", "Reconfigure", "dedupe"]

Advance = Callable[[OrgPolicyState, list[LiveOutcome]], tuple[dict[str, Any], list[dict[str, Any]]]]
"""``(state, new outcomes) -> (new snapshot, transition payloads)``; each payload has
``sequence``."""

Reconfigure = Callable[[OrgPolicyState], dict[str, Any]]
"""``state -> new snapshot`` for a configuration change."""


class PolicyStore(Protocol):
    """Durable per-org engine state with exactly-once application of outcomes."""

    async def migrate(self) -> None:
        """Create what the store needs, idempotently."""

    async def load(self, org: str) -> OrgPolicyState | None:
        """The org's state, ``None`` if it has none yet."""

    async def orgs(self) -> list[str]:
        """Every org with stored state, sorted."""

    async def apply(self, outcomes: Sequence[LiveOutcome], advance: Advance) -> ApplyResult:
        """Apply never-seen outcomes per org through ``advance``, atomically."""

    async def reconfigure(self, org: str, change: Reconfigure) -> OrgPolicyState:
        """Replace the org's snapshot with ``change(state)`` under the org's lock."""

    async def pending(self, limit: int = 1000) -> list[OutboxEntry]:
        """Committed transitions not yet marked published, oldest first per org."""

    async def mark_published(self, entries: Iterable[OutboxEntry]) -> None:
        """Drop published entries from the outbox."""

    async def prune_applied(self, before: datetime) -> int:
        """Forget applied event ids older than ``before``; returns how many."""


def dedupe(outcomes: Sequence[LiveOutcome]) -> tuple[list[LiveOutcome], int]:
    """The first outcome for each ``(org, event_id)`` in the batch, and how many repeats."""
    seen: set[tuple[str, str]] = set()
    out: list[LiveOutcome] = []
    for outcome in outcomes:
        key = (outcome.org, outcome.event_id)
        if key not in seen:
            seen.add(key)
            out.append(outcome)
    return out, len(outcomes) - len(out)


class InMemoryPolicyStore:
    """The store in process memory (tests, single-process tools); same semantics."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._states: dict[str, OrgPolicyState] = {}
        self._applied: dict[tuple[str, str], datetime] = {}
        self._outbox: dict[tuple[str, int], OutboxEntry] = {}

    async def migrate(self) -> None:
        """Nothing to create."""

    async def load(self, org: str) -> OrgPolicyState | None:
        """The org's state, ``None`` if it has none yet."""
        return self._states.get(org)

    async def orgs(self) -> list[str]:
        """Every org with stored state, sorted."""
        return sorted(self._states)

    def _state(self, org: str) -> OrgPolicyState:
        return self._states.get(org) or OrgPolicyState(org, 0, 0, None)

    async def apply(self, outcomes: Sequence[LiveOutcome], advance: Advance) -> ApplyResult:
        """Apply never-seen outcomes per org through ``advance``, atomically per batch."""
        unique, repeats = dedupe(outcomes)
        async with self._lock:
            fresh = [o for o in unique if (o.org, o.event_id) not in self._applied]
            by_org: dict[str, list[LiveOutcome]] = {}
            for outcome in fresh:
                by_org.setdefault(outcome.org, []).append(outcome)
            # Compute everything first so a failing ``advance`` changes nothing.
            now = datetime.now(UTC)
            states: dict[str, OrgPolicyState] = {}
            entries: list[OutboxEntry] = []
            for org in sorted(by_org):
                state = self._state(org)
                snapshot, transitions = advance(state, by_org[org])
                last_seq = max([state.last_seq, *(o.stream_seq for o in by_org[org])])
                states[org] = OrgPolicyState(org, state.version + 1, last_seq, snapshot, now)
                entries += [OutboxEntry(org, int(t["sequence"]), t) for t in transitions]
            self._states.update(states)
            for outcome in fresh:
                self._applied[(outcome.org, outcome.event_id)] = now
            for entry in entries:
                self._outbox[(entry.org, entry.sequence)] = entry
        duplicates = repeats + len(unique) - len(fresh)
        return ApplyResult(len(fresh), duplicates, tuple(entries))

    async def reconfigure(self, org: str, change: Reconfigure) -> OrgPolicyState:
        """Replace the org's snapshot with ``change(state)``."""
        async with self._lock:
            state = self._state(org)
            new = OrgPolicyState(
                org, state.version + 1, state.last_seq, change(state), datetime.now(UTC)
            )
            self._states[org] = new
            return new

    async def pending(self, limit: int = 1000) -> list[OutboxEntry]:
        """Committed transitions not yet marked published."""
        return [self._outbox[key] for key in sorted(self._outbox)][:limit]

    async def mark_published(self, entries: Iterable[OutboxEntry]) -> None:
        """Drop published entries from the outbox."""
        for entry in entries:
            self._outbox.pop((entry.org, entry.sequence), None)

    async def prune_applied(self, before: datetime) -> int:
        """Forget applied event ids older than ``before``."""
        old = [key for key, at in self._applied.items() if at < before]
        for key in old:
            del self._applied[key]
        return len(old)

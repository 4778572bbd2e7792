"""The live policy service: one ``PolicyEngine`` per org, fed by dispatch outcomes.

The store is the truth: each batch rebuilds the orgs' engines from their stored snapshots
under the store's lock, advances them with ``record_many`` (the engine's only state-changing
path, the one the simulator runs too) and stores them back with the transitions. That keeps
replicas consistent without a cache to invalidate; a snapshot is small (counters plus the last
``history_limit`` transitions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from ionveil.errors import ValidationError
from ionveil.policy import PolicyConfig, PolicyEngine
from services.policy.models import (
    ApplyResult,
    LiveOutcome,
    OrgPolicyState,
    OutboxEntry,
    transition_payload,
)
from services.policy.store import PolicyStore

__all__ = ["DEFAULT_HISTORY_LIMIT", "LivePolicyService", "parse_config"]

log = structlog.get_logger(__name__)

DEFAULT_HISTORY_LIMIT = 100
MAX_STATE_LIMIT = 1000


def parse_config(payload: Mapping[str, Any], base: PolicyConfig | None = None) -> PolicyConfig:
    """A ``PolicyConfig`` from a request; fields left out keep ``base`` (or the defaults).

    Raises:
        ValidationError: each problem named by field.
    """
    base = base or PolicyConfig()
    unknown = sorted(
        set(payload) - {"policy_order", "escalation_threshold", "deescalation_thresholds"}
    )
    if unknown:
        raise ValidationError([f"{name}: unknown field" for name in unknown])
    order = payload.get("policy_order", list(base.policy_order))
    if not isinstance(order, list | tuple):
        raise ValidationError("policy_order: must be a list of policy names")
    thresholds = payload.get("deescalation_thresholds")
    if thresholds is None:
        # A new ladder without thresholds gets the defaults that fit it.
        source = base.deescalation_thresholds or {}
        thresholds = {k: v for k, v in source.items() if k in order}
    if not isinstance(thresholds, Mapping):
        raise ValidationError("deescalation_thresholds: must be a mapping of policy to streak")
    return PolicyConfig(
        tuple(order),
        payload.get("escalation_threshold", base.escalation_threshold),
        dict(thresholds),
    )


class LivePolicyService:
    """Per-org engines over a ``PolicyStore``.

    Args:
        store: where state, applied event ids and the transition outbox last.
        history_limit: transitions kept per org (the ``state`` endpoint's history).
    """

    def __init__(self, store: PolicyStore, *, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self.store = store
        self._history_limit = history_limit

    async def start(self) -> None:
        """Create the store's schema."""
        await self.store.migrate()

    def engine(self, state: OrgPolicyState | None) -> PolicyEngine:
        """An engine continuing ``state`` (a fresh default one for ``None`` or no snapshot)."""
        snapshot = state.snapshot if state is not None else None
        if not snapshot:
            return PolicyEngine(history_limit=self._history_limit)
        config = snapshot.get("config") or {}
        base = PolicyConfig()
        engine = PolicyEngine(
            config.get("policy_order", base.policy_order),
            config.get("escalation_threshold", base.escalation_threshold),
            config.get("deescalation_thresholds"),
            history_limit=self._history_limit,
        )
        engine.restore(snapshot)
        return engine

    def _advance(
        self, state: OrgPolicyState, outcomes: list[LiveOutcome]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        engine = self.engine(state)
        # Event time decides the order; the stream sequence breaks ties deterministically.
        ordered = sorted(outcomes, key=lambda o: (o.at, o.stream_seq))
        moved = engine.record_many((o.at, o.success) for o in ordered)
        for transition in moved:
            log.info(
                "policy_transition",
                org=state.org,
                from_policy=transition.from_policy,
                to_policy=transition.to_policy,
                reason=transition.reason,
            )
        return engine.snapshot(), [transition_payload(state.org, t) for t in moved]

    async def apply(self, outcomes: Sequence[LiveOutcome]) -> ApplyResult:
        """Apply a batch exactly once per event id; returns the transitions it committed."""
        if not outcomes:
            return ApplyResult(0, 0, ())
        return await self.store.apply(outcomes, self._advance)

    async def configure(self, org: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Set the org's engine configuration; returns the new state.

        The current policy is kept when it is on the new ladder (else the engine restarts at
        the ladder's first policy); both counters restart at zero; the outcome count and the
        transition history are kept.

        Raises:
            ValidationError: the configuration is invalid (each problem named).
        """
        current = await self.store.load(org)
        config = parse_config(payload, self.engine(current).config)

        def change(state: OrgPolicyState) -> dict[str, Any]:
            old = self.engine(state).snapshot()
            engine = PolicyEngine(
                config.policy_order,
                config.escalation_threshold,
                config.deescalation_thresholds,
                history_limit=self._history_limit,
            )
            policy = old["current_policy"]
            engine.restore(
                {
                    "current_policy": policy
                    if policy in config.policy_order
                    else config.policy_order[0],
                    "failure_burst": 0,
                    "success_streak": 0,
                    "outcomes_recorded": old["outcomes_recorded"],
                    "history": old["history"],
                }
            )
            return engine.snapshot()

        state = await self.store.reconfigure(org, change)
        log.info("policy_configured", org=org, config=config.as_dict())
        return self.describe(org, state)

    async def state(self, org: str, limit: int = 20) -> dict[str, Any]:
        """The org's current policy, counters, configuration and last ``limit`` transitions.

        Raises:
            ValidationError: ``limit`` is not an integer in 0..1000.
        """
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 0 <= limit <= MAX_STATE_LIMIT
        ):
            raise ValidationError(f"limit: must be an integer from 0 to {MAX_STATE_LIMIT}")
        return self.describe(org, await self.store.load(org), limit)

    def describe(self, org: str, state: OrgPolicyState | None, limit: int = 20) -> dict[str, Any]:
        """The reply form of an org's state (timestamps RFC 3339)."""
        engine = self.engine(state)
        history = engine.history[-limit:] if limit else []
        return {
            "org_id": org,
            "policy": engine.current_policy,
            "failure_burst": engine.failure_burst,
            "success_streak": engine.success_streak,
            "outcomes_recorded": engine.outcomes_recorded,
            "last_seq": state.last_seq if state is not None else 0,
            "config": engine.config.as_dict(),
            "transitions": [transition_payload(org, t) for t in reversed(history)],
            "updated_at": state.updated_at if state is not None else None,
        }

    async def pending(self, limit: int = 1000) -> list[OutboxEntry]:
        """Transitions committed but not yet published."""
        return await self.store.pending(limit)

    async def mark_published(self, entries: Sequence[OutboxEntry]) -> None:
        """Forget transitions the stream has acknowledged."""
        await self.store.mark_published(entries)

    async def prune(self, retention_s: float) -> int:
        """Forget applied event ids older than ``retention_s`` seconds."""
        before = datetime.fromtimestamp(datetime.now(UTC).timestamp() - retention_s, UTC)
        return await self.store.prune_applied(before)

"""The escalation policy engine: one ordered ladder of policies, moved by outcomes.

The rule (ARCHITECTURE.md, "Domain rules"): a failure adds one to ``failure_burst`` and zeroes
``success_streak``; a success does the reverse. When ``failure_burst >= escalation_threshold``
and the engine is not at the top, it moves up one level; when ``success_streak`` reaches the
current policy's de-escalation threshold and it is not at the bottom, it moves down one level.
A policy without a de-escalation threshold never de-escalates on its own. Every transition
zeroes both counters and is recorded as ``{from, to, timestamp, reason}``.

The same class runs live (one engine per org in the policy worker) and sandboxed (the policy
simulator runs private instances with a virtual clock), so what is simulated is exactly what
production does. A ``threading.Lock`` guards all state.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ionveil.errors import ValidationError

__all__ = [
    "DEFAULT_DEESCALATION_THRESHOLDS",
    "DEFAULT_ESCALATION_THRESHOLD",
    "DEFAULT_POLICY_ORDER",
    "PolicyConfig",
    "PolicyEngine",
    "PolicyTransition",
    "validate_policy_config",
]

DEFAULT_POLICY_ORDER: tuple[str, ...] = ("normal", "watch", "restricted", "halted")
DEFAULT_ESCALATION_THRESHOLD = 3
DEFAULT_DEESCALATION_THRESHOLDS: dict[str, int] = {"watch": 10, "restricted": 20, "halted": 30}
MAX_POLICY_NAME_LENGTH = 64

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PolicyTransition:
    """One move of the engine; ``sequence`` is the engine's outcome count when it happened."""

    from_policy: str
    to_policy: str
    timestamp: float
    reason: str
    sequence: int = 0

    @property
    def is_escalation(self) -> bool:
        """True when the move went up the ladder (decided by the reason's kind)."""
        return self.reason.startswith("escalat")

    def as_dict(self) -> dict[str, Any]:
        """The wire/contract form ``{from, to, timestamp, reason}`` (plus ``sequence``)."""
        return {
            "from": self.from_policy,
            "to": self.to_policy,
            "timestamp": self.timestamp,
            "reason": self.reason,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyTransition:
        """Inverse of :meth:`as_dict`."""
        return cls(
            from_policy=str(data["from"]),
            to_policy=str(data["to"]),
            timestamp=float(data["timestamp"]),
            reason=str(data["reason"]),
            sequence=int(data.get("sequence", 0)),
        )


def validate_policy_config(
    policy_order: Sequence[str],
    escalation_threshold: object,
    deescalation_thresholds: Mapping[str, object],
) -> list[str]:
    """Every problem with a policy configuration, each naming its field; empty when valid."""
    problems: list[str] = []
    order = list(policy_order) if isinstance(policy_order, list | tuple) else None
    if order is None:
        problems.append("policy_order: must be a list of policy names")
        order = []
    elif len(order) < 2:
        problems.append(f"policy_order: needs at least two policies, got {len(order)}")
    for name in order:
        if not isinstance(name, str) or not name.strip():
            problems.append(f"policy_order: policy names must be non-empty strings, got {name!r}")
        elif len(name) > MAX_POLICY_NAME_LENGTH:
            problems.append(f"policy_order: policy name longer than {MAX_POLICY_NAME_LENGTH}")
    duplicates = sorted({n for n in order if isinstance(n, str) and order.count(n) > 1})
    if duplicates:
        problems.append(f"policy_order: duplicate policies {duplicates}")
    if (
        isinstance(escalation_threshold, bool)
        or not isinstance(escalation_threshold, int)
        or escalation_threshold < 1
    ):
        problems.append(
            f"escalation_threshold: must be an integer >= 1, got {escalation_threshold!r}"
        )
    if not isinstance(deescalation_thresholds, Mapping):
        problems.append("deescalation_thresholds: must be a mapping of policy to streak")
        return problems
    for policy, streak in deescalation_thresholds.items():
        if policy not in order:
            problems.append(f"deescalation_thresholds: unknown policy {policy!r}")
        if isinstance(streak, bool) or not isinstance(streak, int) or streak < 1:
            problems.append(
                f"deescalation_thresholds[{policy!r}]: must be an integer >= 1, got {streak!r}"
            )
    return problems


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """A validated engine configuration (what a scenario or an org's live settings name)."""

    policy_order: tuple[str, ...] = DEFAULT_POLICY_ORDER
    escalation_threshold: int = DEFAULT_ESCALATION_THRESHOLD
    deescalation_thresholds: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        thresholds = (
            dict(DEFAULT_DEESCALATION_THRESHOLDS)
            if self.deescalation_thresholds is None
            else dict(self.deescalation_thresholds)
        )
        object.__setattr__(self, "policy_order", tuple(self.policy_order))
        object.__setattr__(self, "deescalation_thresholds", thresholds)
        problems = validate_policy_config(
            list(self.policy_order), self.escalation_threshold, thresholds
        )
        if problems:
            raise ValidationError(problems)

    def as_dict(self) -> dict[str, Any]:
        """Plain form for storage and the wire."""
        return {
            "policy_order": list(self.policy_order),
            "escalation_threshold": self.escalation_threshold,
            "deescalation_thresholds": dict(self.deescalation_thresholds or {}),
        }


class PolicyEngine:
    """A thread-safe escalation ladder driven by success/failure outcomes.

    Args:
        policy_order: The ladder, least to most restrictive; the engine starts at the first.
        escalation_threshold: Consecutive failures that move the engine up one level.
        deescalation_thresholds: Per policy, consecutive successes that move it down one
            level; ``None`` takes ``DEFAULT_DEESCALATION_THRESHOLDS`` (filtered to the order),
            ``{}`` means the engine never de-escalates on its own.
        clock: Epoch seconds now; transitions without an explicit time use it. The simulator
            passes virtual times explicitly instead.
        history_limit: How many transitions ``history`` keeps (oldest dropped first).

    Raises:
        ValidationError: the configuration is invalid (every problem listed).
    """

    def __init__(
        self,
        policy_order: Sequence[str] = DEFAULT_POLICY_ORDER,
        escalation_threshold: int = DEFAULT_ESCALATION_THRESHOLD,
        deescalation_thresholds: Mapping[str, int] | None = None,
        *,
        clock: Clock = time.time,
        history_limit: int = 1000,
    ) -> None:
        if deescalation_thresholds is None:
            deescalation_thresholds = {
                k: v for k, v in DEFAULT_DEESCALATION_THRESHOLDS.items() if k in policy_order
            }
        self.config = PolicyConfig(
            tuple(policy_order), escalation_threshold, dict(deescalation_thresholds)
        )
        self._order = self.config.policy_order
        thresholds = self.config.deescalation_thresholds or {}
        # Index-aligned thresholds (0 = never) keep the hot loop free of dict lookups.
        self._deesc = [int(thresholds.get(p, 0)) for p in self._order]
        self._clock = clock
        self._lock = threading.Lock()
        self._index = 0
        self._failure_burst = 0
        self._success_streak = 0
        self._outcomes = 0
        self._history: deque[PolicyTransition] = deque(maxlen=history_limit)

    # -- read side -------------------------------------------------------------------------
    @property
    def policy_order(self) -> tuple[str, ...]:
        """The ladder, least to most restrictive."""
        return self._order

    @property
    def current_policy(self) -> str:
        """The policy in force now."""
        with self._lock:
            return self._order[self._index]

    @property
    def failure_burst(self) -> int:
        """Consecutive failures since the last success or transition."""
        with self._lock:
            return self._failure_burst

    @property
    def success_streak(self) -> int:
        """Consecutive successes since the last failure or transition."""
        with self._lock:
            return self._success_streak

    @property
    def outcomes_recorded(self) -> int:
        """How many outcomes this engine has seen in its life (restored across restarts)."""
        with self._lock:
            return self._outcomes

    @property
    def history(self) -> list[PolicyTransition]:
        """Recorded transitions, oldest first."""
        with self._lock:
            return list(self._history)

    # -- write side ------------------------------------------------------------------------
    def record(self, success: bool, at: float | None = None) -> PolicyTransition | None:
        """Feed one outcome; returns the transition it caused, if any."""
        moved = self.record_many(((self._clock() if at is None else at, success),))
        return moved[0] if moved else None

    def record_success(self, at: float | None = None) -> PolicyTransition | None:
        """Shorthand for ``record(True, at)``."""
        return self.record(True, at)

    def record_failure(self, at: float | None = None) -> PolicyTransition | None:
        """Shorthand for ``record(False, at)``."""
        return self.record(False, at)

    def record_many(self, outcomes: Iterable[tuple[float, bool]]) -> list[PolicyTransition]:
        """Feed outcomes ``(timestamp, success)`` in order under one lock acquisition.

        This is the engine's only state-changing path: ``record`` calls it with one outcome,
        the live worker with a fetched batch, the simulator with chunks of a pattern. Keeping
        one path is what makes simulated and live behaviour identical.

        Returns:
            The transitions caused, in order.
        """
        moved: list[PolicyTransition] = []
        order = self._order
        deesc = self._deesc
        top = len(order) - 1
        threshold = self.config.escalation_threshold
        with self._lock:
            index, burst, streak, seq = (
                self._index,
                self._failure_burst,
                self._success_streak,
                self._outcomes,
            )
            for at, success in outcomes:
                seq += 1
                if success:
                    streak += 1
                    burst = 0
                    if index and deesc[index] and streak >= deesc[index]:
                        moved.append(
                            PolicyTransition(
                                order[index],
                                order[index - 1],
                                at,
                                f"deescalated: success_streak {streak} >= {deesc[index]}",
                                seq,
                            )
                        )
                        index -= 1
                        streak = 0
                else:
                    burst += 1
                    streak = 0
                    if burst >= threshold and index < top:
                        moved.append(
                            PolicyTransition(
                                order[index],
                                order[index + 1],
                                at,
                                f"escalated: failure_burst {burst} >= {threshold}",
                                seq,
                            )
                        )
                        index += 1
                        burst = 0
            self._index, self._failure_burst, self._success_streak, self._outcomes = (
                index,
                burst,
                streak,
                seq,
            )
            self._history.extend(moved)
        return moved

    def reset(self) -> None:
        """Back to the first policy with zeroed counters; history is kept."""
        with self._lock:
            self._index = self._failure_burst = self._success_streak = 0

    # -- persistence -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The engine's whole state as plain data, for storage; see :meth:`restore`."""
        with self._lock:
            return {
                "config": self.config.as_dict(),
                "current_policy": self._order[self._index],
                "failure_burst": self._failure_burst,
                "success_streak": self._success_streak,
                "outcomes_recorded": self._outcomes,
                "history": [t.as_dict() for t in self._history],
            }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`snapshot`; the current policy must be on this ladder.

        Raises:
            ValidationError: the snapshot does not fit this engine.
        """
        current = state.get("current_policy")
        if current not in self._order:
            raise ValidationError(f"current_policy: {current!r} is not in {list(self._order)}")
        burst, streak = state.get("failure_burst", 0), state.get("success_streak", 0)
        if not all(isinstance(v, int) and v >= 0 for v in (burst, streak)):
            raise ValidationError("failure_burst/success_streak: must be integers >= 0")
        history = [PolicyTransition.from_dict(t) for t in state.get("history", [])]
        with self._lock:
            self._index = self._order.index(current)
            self._failure_burst = burst
            self._success_streak = streak
            self._outcomes = int(state.get("outcomes_recorded", 0))
            self._history.clear()
            self._history.extend(history)

    @classmethod
    def from_snapshot(cls, state: Mapping[str, Any], *, clock: Clock = time.time) -> PolicyEngine:
        """Build an engine from its configuration and state in one step."""
        config = state.get("config") or {}
        engine = cls(
            config.get("policy_order", DEFAULT_POLICY_ORDER),
            config.get("escalation_threshold", DEFAULT_ESCALATION_THRESHOLD),
            config.get("deescalation_thresholds"),
            clock=clock,
        )
        engine.restore(state)
        return engine

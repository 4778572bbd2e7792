"""Replay recorded history: "what would this policy have done last Tuesday?".

An org's recorded dispatch outcomes (did each response meet its SLA?) over a time range become
a ``FailurePattern`` whose offsets are whole seconds since ``start`` (floored), so the same
engine that runs live can be run over the past with a different configuration. The outcomes
come from the analytics database through ``MetricsCollector.fetch_dispatch_outcomes`` (or any
object with that method, or an asyncpg pool of the analytics database).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ionveil.errors import ConfigurationError, ValidationError
from ionveil.models import MAX_ID_LENGTH
from services.simulator.engine import FailurePattern

__all__ = ["OutcomeSource", "pattern_from_history", "replay_duration_seconds"]


@runtime_checkable
class OutcomeSource(Protocol):
    """Anything that can list an org's dispatch outcomes in time order."""

    async def fetch_dispatch_outcomes(
        self, org_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, bool]]:
        """``(recorded_at, sla_met)`` pairs with ``start <= recorded_at <= end``, oldest first."""


def _check_range(org_id: object, start: object, end: object) -> None:
    problems: list[str] = []
    if not isinstance(org_id, str) or not org_id.strip() or len(org_id) > MAX_ID_LENGTH:
        problems.append(f"org_id: must be a non-empty string of at most {MAX_ID_LENGTH}")
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            problems.append(f"{name}: must be a timezone-aware datetime")
    if not problems and end <= start:  # type: ignore[operator]
        problems.append("end: must be after start")
    if problems:
        raise ValidationError(problems)


def replay_duration_seconds(start: datetime, end: datetime) -> int:
    """The simulated duration that covers ``[start, end]``: whole seconds, rounded up."""
    return max(1, math.ceil((end - start).total_seconds()))


def _as_source(source: Any) -> OutcomeSource:
    if isinstance(source, OutcomeSource):
        return source
    try:
        from services.analytics.metrics import MetricsCollector
    except ImportError as exc:  # the analytics service is not installed alongside
        raise ConfigurationError(
            "replay: services.analytics.metrics is unavailable; pass a MetricsCollector"
        ) from exc
    return MetricsCollector(source)


async def pattern_from_history(
    source: Any, org_id: str, start: datetime, end: datetime
) -> FailurePattern:
    """A pattern of ``org_id``'s recorded outcomes between ``start`` and ``end``.

    Args:
        source: A ``MetricsCollector`` (or any ``OutcomeSource``), or an asyncpg pool of the
            analytics database (wrapped in a ``MetricsCollector``).
        org_id: The organisation.
        start: Beginning of the range (aware datetime); offset 0.
        end: End of the range (aware datetime, after ``start``).

    Returns:
        The pattern: one event per recorded outcome, offset = whole seconds since ``start``
        (floored), success = SLA met; outcomes outside the range are dropped. Simulate it for
        ``replay_duration_seconds(start, end)``.

    Raises:
        ValidationError: bad org id or range.
    """
    _check_range(org_id, start, end)
    outcomes = await _as_source(source).fetch_dispatch_outcomes(org_id, start, end)
    events = [
        (int((at - start).total_seconds() // 1), bool(ok))
        for at, ok in outcomes
        if start <= at <= end
    ]
    events.sort(key=lambda e: e[0])
    return FailurePattern(
        pattern_id=f"replay-{org_id}-{start.isoformat()}-{end.isoformat()}",
        events=events,
        description=(
            f"recorded outcomes of {org_id} from {start.isoformat()} to {end.isoformat()} "
            f"({len(events)} events)"
        ),
    )

"""Failure-pattern generators: pure, deterministic given a seed.

Every generator returns ``(offset_seconds, is_success)`` events in time order. Offsets are whole
seconds (the contract's ``tuple[int, bool]``), so with more than one event per second several
events share an offset: event ``i`` of a pattern with ``events_per_second = r`` happens at
``int(i / r)``. That keeps the patterns exact and reproducible; the simulator attributes events
to policies by their index, never by their offset, so equal offsets lose nothing.
"""

from __future__ import annotations

import math
import random

from ionveil.errors import ValidationError

__all__ = [
    "CASCADE_INTERVAL_SECONDS",
    "MAX_PATTERN_EVENTS",
    "burst_events",
    "cascade_events",
    "cascade_rate",
    "constant_events",
]

MAX_PATTERN_EVENTS = 20_000_000
"""Upper bound on the events one generator call may produce (memory guard)."""

CASCADE_INTERVAL_SECONDS = 60
"""The cascading generator changes its failure rate once per interval of this many seconds."""

Event = tuple[int, bool]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_rate(name: str, value: object, problems: list[str]) -> None:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        problems.append(f"{name}: must be a number from 0.0 to 1.0, got {value!r}")


def _check_positive_int(name: str, value: object, problems: list[str]) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        problems.append(f"{name}: must be an integer >= 1, got {value!r}")


def _check_eps(value: object, problems: list[str]) -> None:
    if not _is_number(value) or float(value) <= 0:  # type: ignore[arg-type]
        problems.append(f"events_per_second: must be a finite number > 0, got {value!r}")


def _event_count(duration_seconds: int, events_per_second: float) -> int:
    count = math.floor(duration_seconds * events_per_second + 1e-9)
    if count > MAX_PATTERN_EVENTS:
        raise ValidationError(
            f"events_per_second: {count} events exceed the limit of {MAX_PATTERN_EVENTS}"
        )
    return count


def _offsets(count: int, events_per_second: float) -> list[int]:
    if events_per_second == 1.0:
        return list(range(count))
    step = 1.0 / events_per_second
    return [int(i * step + 1e-9) for i in range(count)]


def _rng(seed: int | None) -> random.Random:
    if seed is not None and not _is_int(seed):
        raise ValidationError(f"seed: must be an integer or None, got {seed!r}")
    return random.Random(seed)


def constant_events(
    rate: float,
    duration_seconds: int,
    events_per_second: float = 1.0,
    *,
    seed: int | None = None,
) -> list[Event]:
    """Events at a steady pace, each a failure with probability ``rate`` (independently).

    Raises:
        ValidationError: a parameter is out of range (each problem names its field).
    """
    problems: list[str] = []
    _check_rate("rate", rate, problems)
    _check_positive_int("duration_seconds", duration_seconds, problems)
    _check_eps(events_per_second, problems)
    if problems:
        raise ValidationError(problems)
    rng = _rng(seed)
    count = _event_count(duration_seconds, float(events_per_second))
    draw = rng.random
    threshold = float(rate)
    return [(t, draw() >= threshold) for t in _offsets(count, float(events_per_second))]


def burst_events(
    burst_size: int,
    burst_interval_seconds: int,
    duration_seconds: int,
    *,
    seed: int | None = None,
) -> list[Event]:
    """One event per second; every interval starts with ``burst_size`` consecutive failures.

    Burst ``k`` starts at ``k * burst_interval_seconds``; with a ``seed`` each start is shifted
    by a reproducible random amount within its interval's slack
    (``burst_interval_seconds - burst_size`` seconds), so bursts never overlap. Every other
    second is a success. A ``burst_size`` at least the interval makes every event a failure.

    Raises:
        ValidationError: a parameter is out of range (each problem names its field).
    """
    problems: list[str] = []
    _check_positive_int("burst_size", burst_size, problems)
    _check_positive_int("burst_interval_seconds", burst_interval_seconds, problems)
    _check_positive_int("duration_seconds", duration_seconds, problems)
    if problems:
        raise ValidationError(problems)
    count = _event_count(duration_seconds, 1.0)
    rng = _rng(seed) if seed is not None else None
    slack = max(0, burst_interval_seconds - burst_size)
    outcomes = [True] * count
    for start in range(0, count, burst_interval_seconds):
        shift = rng.randint(0, slack) if rng is not None else 0
        first = start + shift
        last = min(count, first + burst_size, start + max(burst_size, burst_interval_seconds))
        outcomes[first:last] = [False] * max(0, last - first)
    return list(zip(range(count), outcomes, strict=True))


def cascade_rate(
    offset_seconds: float,
    initial_rate: float,
    escalation_factor: float,
    recovery_after_seconds: int,
    *,
    interval_seconds: int = CASCADE_INTERVAL_SECONDS,
) -> float:
    """The failure probability of the cascading pattern at ``offset_seconds``.

    Before ``recovery_after_seconds`` the rate is ``initial_rate * factor**k`` for the ``k``-th
    interval (capped at 1.0); from then on it falls back by the same factor per interval,
    starting from the rate reached at the recovery point, until it is ``initial_rate`` again.
    """
    interval = int(offset_seconds // interval_seconds)
    peak_interval = int(recovery_after_seconds // interval_seconds)
    if offset_seconds < recovery_after_seconds:
        return min(1.0, initial_rate * escalation_factor**interval)
    peak = min(1.0, initial_rate * escalation_factor**peak_interval)
    fallen = interval - peak_interval + 1
    return max(initial_rate, min(1.0, peak / escalation_factor**fallen))


def cascade_events(
    initial_rate: float,
    escalation_factor: float,
    recovery_after_seconds: int,
    duration_seconds: int,
    *,
    events_per_second: float = 1.0,
    interval_seconds: int = CASCADE_INTERVAL_SECONDS,
    seed: int | None = None,
) -> list[Event]:
    """Failures that grow by ``escalation_factor`` per interval, then recover.

    The failure probability of each event is :func:`cascade_rate` at its offset.

    Raises:
        ValidationError: a parameter is out of range (each problem names its field).
    """
    problems: list[str] = []
    _check_rate("initial_rate", initial_rate, problems)
    if not _is_number(escalation_factor) or float(escalation_factor) < 1.0:
        problems.append(
            f"escalation_factor: must be a finite number >= 1.0, got {escalation_factor!r}"
        )
    if not _is_int(recovery_after_seconds) or recovery_after_seconds < 0:
        problems.append(
            f"recovery_after_seconds: must be an integer >= 0, got {recovery_after_seconds!r}"
        )
    _check_positive_int("duration_seconds", duration_seconds, problems)
    _check_positive_int("interval_seconds", interval_seconds, problems)
    _check_eps(events_per_second, problems)
    if problems:
        raise ValidationError(problems)
    rng = _rng(seed)
    draw = rng.random
    count = _event_count(duration_seconds, float(events_per_second))
    events: list[Event] = []
    current: tuple[int, bool] = (-1, False)
    rate = 0.0
    for t in _offsets(count, float(events_per_second)):
        key = (t // interval_seconds, t >= recovery_after_seconds)
        if key != current:
            current = key
            rate = cascade_rate(
                t,
                float(initial_rate),
                float(escalation_factor),
                recovery_after_seconds,
                interval_seconds=interval_seconds,
            )
        events.append((t, draw() >= rate))
    return events

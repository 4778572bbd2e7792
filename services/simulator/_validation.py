"""Pure validation of simulator inputs, in the manner of ``validate_dispatch_order``.

Each function returns every problem it finds, each naming its field; an empty list means
valid. The checks over a pattern's events run at C speed (``map``/``set``) so that validating a
million-event pattern costs a small fraction of simulating it.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from ionveil.models import MAX_ID_LENGTH
from ionveil.policy import validate_policy_config

__all__ = [
    "MAX_DURATION_SECONDS",
    "validate_duration",
    "validate_pattern",
    "validate_scenario",
]

MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
"""Ten years of virtual time: more than any replay or what-if needs."""

_MAX_LISTED = 5  # bad events named individually before the rest are summarised


def _check_name(field: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{field}: must be a non-empty string")
    elif len(value) > MAX_ID_LENGTH:
        problems.append(f"{field}: at most {MAX_ID_LENGTH} characters, got {len(value)}")


def validate_scenario(scenario: Any) -> list[str]:
    """Every problem with a ``PolicyScenario``: name, policy order, thresholds, metadata.

    The policy part is ``ionveil.policy.validate_policy_config`` (fewer than two or duplicate
    policies, a threshold below 1, a de-escalation threshold for a policy not in the order), so
    a valid scenario is exactly one the real engine accepts.
    """
    problems: list[str] = []
    _check_name("name", getattr(scenario, "name", None), problems)
    problems.extend(
        validate_policy_config(
            getattr(scenario, "policy_order", None),  # type: ignore[arg-type]
            getattr(scenario, "escalation_threshold", None),
            getattr(scenario, "deescalation_thresholds", None),  # type: ignore[arg-type]
        )
    )
    if not isinstance(getattr(scenario, "metadata", {}), Mapping):
        problems.append("metadata: must be a mapping")
    return problems


def _event_problems(events: list | tuple) -> list[str]:
    """The slow, precise pass: name the first bad events by index."""
    problems: list[str] = []
    for i, event in enumerate(events):
        if len(problems) >= _MAX_LISTED:
            problems.append("events: further bad events not listed")
            break
        if not isinstance(event, list | tuple) or len(event) != 2:
            problems.append(f"events[{i}]: must be a pair (offset_seconds, is_success)")
            continue
        offset, success = event
        if isinstance(offset, bool) or not isinstance(offset, int):
            problems.append(f"events[{i}].offset: must be an integer, got {offset!r}")
        elif offset < 0:
            problems.append(f"events[{i}].offset: must be >= 0 (no negative offsets), got {offset}")
        if not isinstance(success, bool):
            problems.append(f"events[{i}].is_success: must be a bool, got {success!r}")
    return problems


def _events_look_valid(events: list | tuple) -> bool:
    """The fast pass: True when every event is an (int >= 0, bool) pair."""
    try:
        if set(map(len, events)) - {2}:
            return False
    except TypeError:
        return False
    if not events:
        return True
    if set(map(type, events)) - {tuple, list}:
        return False
    offsets = list(map(itemgetter(0), events))
    if set(map(type, offsets)) != {int} or min(offsets) < 0:
        return False
    return set(map(type, map(itemgetter(1), events))) == {bool}


def validate_pattern(pattern: Any) -> list[str]:
    """Every problem with a ``FailurePattern``: id, description and each event.

    Events are ``(offset_seconds, is_success)`` with an integer offset >= 0 and a bool; they
    need not be in time order (the simulator sorts them, keeping the order of equal offsets).
    """
    problems: list[str] = []
    _check_name("pattern_id", getattr(pattern, "pattern_id", None), problems)
    if not isinstance(getattr(pattern, "description", ""), str):
        problems.append("description: must be a string")
    events = getattr(pattern, "events", None)
    if not isinstance(events, list | tuple):
        problems.append("events: must be a list of (offset_seconds, is_success) pairs")
    elif not _events_look_valid(events):
        problems.extend(_event_problems(events))
    return problems


def validate_duration(duration_seconds: object) -> list[str]:
    """Problems with a simulated duration: a whole number of seconds, 1 to ten years."""
    if (
        isinstance(duration_seconds, bool)
        or not isinstance(duration_seconds, int)
        or not 1 <= duration_seconds <= MAX_DURATION_SECONDS
    ):
        return [
            f"duration_seconds: must be an integer from 1 to {MAX_DURATION_SECONDS}, "
            f"got {duration_seconds!r}"
        ]
    return []

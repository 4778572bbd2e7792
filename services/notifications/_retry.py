"""Validation of channel settings and back-off arithmetic shared by the channels."""

from __future__ import annotations

import math

from ionveil.errors import ValidationError

__all__ = ["backoff_delay", "check_channel_settings", "total_backoff"]


def check_channel_settings(
    *, timeout_s: float, max_attempts: int, backoff_s: float, name: str
) -> None:
    """Refuse impossible settings, naming each parameter.

    Raises:
        ValidationError: listing every bad parameter.
    """
    problems: list[str] = []
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not (math.isfinite(timeout_s) and timeout_s > 0)
    ):
        problems.append(f"timeout_s: must be a finite number > 0, got {timeout_s!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        problems.append(f"max_attempts: must be an integer >= 1, got {max_attempts!r}")
    if (
        isinstance(backoff_s, bool)
        or not isinstance(backoff_s, int | float)
        or not (math.isfinite(backoff_s) and backoff_s >= 0)
    ):
        problems.append(f"backoff_s: must be a finite number >= 0, got {backoff_s!r}")
    if not isinstance(name, str) or not name.strip():
        problems.append("name: must be a non-empty string")
    if problems:
        raise ValidationError(problems)


def backoff_delay(backoff_s: float, attempt: int) -> float:
    """Pause after failed try number ``attempt`` (1-based): ``backoff_s * 2**(attempt-1)``."""
    return backoff_s * (2 ** (attempt - 1))


def total_backoff(backoff_s: float, max_attempts: int) -> float:
    """Sum of the pauses between ``max_attempts`` tries."""
    return sum(backoff_delay(backoff_s, a) for a in range(1, max_attempts))

"""Small helpers shared by test modules (no servers here; fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """An injected clock a test moves by hand; several 'replicas' of a test can share one."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, minutes: float) -> datetime:
        """Move the clock forward by ``minutes``; returns the new time."""
        self.t += timedelta(minutes=minutes)
        return self.t

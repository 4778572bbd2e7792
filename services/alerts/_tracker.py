"""Active incidents indexed for batch SLA checks.

Per priority, dispatch times are kept sorted (with the incident keys in a parallel list), so
"every incident of priority p dispatched at or before t" is one binary search and a slice.
A check cycle then costs O(rules x priorities x log n) plus the incidents that actually fire,
instead of one evaluation per incident.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ActiveIncidents", "IncidentKey", "TrackedIncident"]

IncidentKey = tuple[str, str]  # (org_id, incident_id)


@dataclass(frozen=True, slots=True)
class TrackedIncident:
    """An incident whose SLA clock runs (dispatched, not yet arrived)."""

    org_id: str
    incident_id: str
    priority: int
    dispatch_ts: float  # epoch seconds
    region: str | None = None

    @property
    def key(self) -> IncidentKey:
        """The incident's identity (ids are unique per org)."""
        return (self.org_id, self.incident_id)


class ActiveIncidents:
    """The set of active incidents, sorted by dispatch time per priority."""

    def __init__(self) -> None:
        self._by_key: dict[IncidentKey, TrackedIncident] = {}
        self._ts: dict[int, list[float]] = {p: [] for p in range(1, 6)}
        self._keys: dict[int, list[IncidentKey]] = {p: [] for p in range(1, 6)}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[TrackedIncident]:
        return iter(list(self._by_key.values()))

    def get(self, key: IncidentKey) -> TrackedIncident | None:
        """The tracked incident with ``key``, if any."""
        return self._by_key.get(key)

    def add(self, incident: TrackedIncident) -> None:
        """Track ``incident`` (replacing an earlier entry with the same key)."""
        self.remove(incident.key)
        self._by_key[incident.key] = incident
        ts, keys = self._ts[incident.priority], self._keys[incident.priority]
        at = bisect_right(ts, incident.dispatch_ts)
        ts.insert(at, incident.dispatch_ts)
        keys.insert(at, incident.key)

    def replace_all(self, incidents: list[TrackedIncident]) -> None:
        """Track exactly ``incidents`` (one sort per priority, not one insert each)."""
        self._by_key = {i.key: i for i in incidents}
        for priority in range(1, 6):
            ordered = sorted(
                (i.dispatch_ts, i.key) for i in self._by_key.values() if i.priority == priority
            )
            self._ts[priority] = [ts for ts, _ in ordered]
            self._keys[priority] = [key for _, key in ordered]

    def remove(self, key: IncidentKey) -> TrackedIncident | None:
        """Stop tracking ``key``; the incident removed, or None when it was not tracked."""
        incident = self._by_key.pop(key, None)
        if incident is None:
            return None
        ts, keys = self._ts[incident.priority], self._keys[incident.priority]
        at = bisect_left(ts, incident.dispatch_ts)
        while keys[at] != key:
            at += 1
        del ts[at]
        del keys[at]
        return incident

    def dispatched_before(
        self, priority: int, cutoff_ts: float, *, inclusive: bool
    ) -> list[IncidentKey]:
        """Keys of priority-``priority`` incidents dispatched before (or at) ``cutoff_ts``."""
        ts = self._ts[priority]
        end = bisect_right(ts, cutoff_ts) if inclusive else bisect_left(ts, cutoff_ts)
        return self._keys[priority][:end]

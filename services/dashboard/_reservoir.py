"""The bounded per-org reservoir of the most recent geo-tagged events (for heatmaps).

A ring of numpy columns rather than a deque of tuples: appending a fold's rows is a few array
copies instead of one tuple per event, and 100,000 kept rows are six arrays, not 100,000 objects
for the garbage collector to walk on every full collection. The ring grows (doubling) up to its
capacity as rows arrive, so an org without coordinates costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Reservoir"]

_FIELDS = ("ts", "lat", "lon", "rt", "dist", "met")
_MIN_ROWS = 1024


class Reservoir:
    """The last ``capacity`` rows of (ts, lat, lon, rt, dist, met), oldest first."""

    def __init__(self, capacity: int) -> None:
        """Create an empty reservoir holding at most ``capacity`` rows."""
        self.capacity = capacity
        self._cols = np.zeros((len(_FIELDS), 0), dtype=np.float64)
        self._start = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, *columns: np.ndarray) -> None:
        """Append rows given as the six columns ``ts, lat, lon, rt, dist, met`` (in order)."""
        n = len(columns[0])
        if not n:
            return
        if n >= self.capacity:
            self._cols = np.vstack([c[-self.capacity :] for c in columns]).astype(np.float64)
            self._start, self._size = 0, self.capacity
            return
        allocated = self._cols.shape[1]
        if self._size + n > allocated and allocated < self.capacity:
            grown = min(self.capacity, max(2 * allocated, self._size + n, _MIN_ROWS))
            cols = np.zeros((len(_FIELDS), grown), dtype=np.float64)
            cols[:, : self._size] = self.columns()
            self._cols, self._start, allocated = cols, 0, grown
        rows = np.vstack(columns)
        end = (self._start + self._size) % allocated
        first = min(n, allocated - end)
        self._cols[:, end : end + first] = rows[:, :first]
        self._cols[:, : n - first] = rows[:, first:]
        overflow = max(0, self._size + n - allocated)
        self._start = (self._start + overflow) % allocated
        self._size += n - overflow

    def columns(self) -> np.ndarray:
        """A ``(6, len)`` array of the rows, oldest first (a copy)."""
        if not self._size:
            return np.zeros((len(_FIELDS), 0), dtype=np.float64)
        index = (self._start + np.arange(self._size)) % self._cols.shape[1]
        return self._cols[:, index]

    def drop_older(self, cutoff_s: float) -> None:
        """Drop rows from the oldest end while their time is before ``cutoff_s``."""
        if not self._size:
            return
        ts = self.columns()[0]
        young = np.flatnonzero(ts >= cutoff_s)
        dropped = int(young[0]) if len(young) else self._size
        self._start = (self._start + dropped) % self._cols.shape[1]
        self._size -= dropped

    def rows(self) -> list[list[float | bool]]:
        """Every row as ``[ts, lat, lon, rt, dist, met]`` (the checkpoint form; ``met`` is
        1.0/0.0)."""
        rows: list[list[float | bool]] = self.columns().T.tolist()
        return rows

    def extend_rows(self, rows: Iterable[Sequence[float | bool]]) -> None:
        """Append rows in the ``rows()`` form (a checkpoint being restored)."""
        data = np.array(list(rows), dtype=np.float64).reshape(-1, len(_FIELDS))
        self.extend(*data.T)

"""Aligned time buckets per org: count/sum/min/max/sketch per window x bucket x dimension combo.

Layout (why): every window (1m ... 1d) keeps its own buckets, each holding one ``Accumulator``
per full dimension combination (region, severity, unit_type) plus one for all combinations
(``ALL``). A query for any dimension subset then merges at most one accumulator per matching
combination per bucket, and an unfiltered query (the snapshot, the trend chart) reads one
accumulator per bucket. Rolling windows up at ingest costs twelve groupings per fold; numpy
sorts a whole buffer once into (minute, combination) groups and builds every coarser grouping
from those groups (``_levels``), so the per-event Python work stays in the validation pass and
the fold's Python work is one dict update per distinct (accumulator, sketch bin) pair.
Memory is bounded by orgs x buckets within retention x combinations in use;
duplicate ids are kept as sorted 64-bit hashes per minute and evicted with their minute.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.dashboard._levels import Level
from services.dashboard._sketch import RELATIVE_ACCURACY, LogSketch, rebin

__all__ = ["ALL", "WINDOWS_S", "Accumulator", "Combo", "FoldColumns", "OrgStore"]

ALL = -1
"""Combination id of the accumulator that covers every combination."""

WINDOWS_S: tuple[int, ...] = (60, 300, 900, 3600, 21600, 86400)

Combo = tuple[str, str, str]
"""(region, severity as a string, unit_type)."""


class Accumulator:
    """Exact count/sum/min/max of the numeric metrics plus their sketches, for one bucket."""

    __slots__ = (
        "count",
        "d_max",
        "d_min",
        "d_sum",
        "dist",
        "met",
        "rt",
        "rt_max",
        "rt_min",
        "rt_sum",
    )

    def __init__(self) -> None:
        self.count = 0
        self.met = 0
        self.rt_sum = 0.0
        self.rt_min = math.inf
        self.rt_max = -math.inf
        self.d_sum = 0.0
        self.d_min = math.inf
        self.d_max = -math.inf
        self.rt = LogSketch()
        self.dist = LogSketch()

    def merge(self, other: Accumulator) -> None:
        """Add ``other`` into this accumulator."""
        self.count += other.count
        self.met += other.met
        self.rt_sum += other.rt_sum
        self.rt_min = min(self.rt_min, other.rt_min)
        self.rt_max = max(self.rt_max, other.rt_max)
        self.d_sum += other.d_sum
        self.d_min = min(self.d_min, other.d_min)
        self.d_max = max(self.d_max, other.d_max)
        self.rt.merge(other.rt)
        self.dist.merge(other.dist)

    def to_wire(self) -> list[Any]:
        """A compact msgpack-friendly list."""
        return [
            self.count,
            self.met,
            self.rt_sum,
            self.rt_min,
            self.rt_max,
            self.d_sum,
            self.d_min,
            self.d_max,
            list(self.rt.bins),
            list(self.rt.bins.values()),
            list(self.dist.bins),
            list(self.dist.bins.values()),
        ]

    @classmethod
    def from_wire(cls, data: list[Any], accuracy: float = RELATIVE_ACCURACY) -> Accumulator:
        """Rebuild from ``to_wire()`` output (sketch bins made with ``accuracy``)."""
        acc = cls()
        (
            acc.count,
            acc.met,
            acc.rt_sum,
            acc.rt_min,
            acc.rt_max,
            acc.d_sum,
            acc.d_min,
            acc.d_max,
        ) = data[:8]
        acc.rt = LogSketch(rebin(dict(zip(data[8], data[9], strict=True)), accuracy))
        acc.dist = LogSketch(rebin(dict(zip(data[10], data[11], strict=True)), accuracy))
        return acc


class FoldColumns:
    """One org's validated, not yet aggregated events as parallel numpy columns."""

    __slots__ = ("cid", "dist", "hashes", "met", "rt", "ts")

    def __init__(
        self,
        ts: np.ndarray,
        cid: np.ndarray,
        rt: np.ndarray,
        dist: np.ndarray,
        met: np.ndarray,
        hashes: np.ndarray,
    ) -> None:
        self.ts, self.cid, self.rt, self.dist, self.met, self.hashes = (
            ts,
            cid,
            rt,
            dist,
            met,
            hashes,
        )

    def take(self, mask: np.ndarray) -> FoldColumns:
        """The rows where ``mask`` is true."""
        return FoldColumns(
            self.ts[mask],
            self.cid[mask],
            self.rt[mask],
            self.dist[mask],
            self.met[mask],
            self.hashes[mask],
        )


class OrgStore:
    """All buckets, combinations and seen ids of one org."""

    def __init__(self) -> None:
        self.combos: dict[Combo, int] = {}
        self.combo_list: list[Combo] = []
        self.windows: dict[int, dict[int, dict[int, Accumulator]]] = {w: {} for w in WINDOWS_S}
        self.seen: dict[int, np.ndarray] = {}
        self.version = 0

    def combo_id(self, combo: Combo) -> int:
        """The id of a dimension combination, registering it when new."""
        cid = self.combos.get(combo)
        if cid is None:
            cid = self.combos[combo] = len(self.combo_list)
            self.combo_list.append(combo)
        return cid

    def dedupe(self, cols: FoldColumns) -> tuple[FoldColumns, np.ndarray | None]:
        """Drop rows whose id hash was already seen in the same minute (or earlier in ``cols``).

        Returns:
            The new rows, and the keep-mask over ``cols`` (``None`` when nothing was dropped).
        """
        minutes = np.floor_divide(cols.ts, 60.0).astype(np.int64)
        order = np.lexsort((cols.hashes, minutes))
        m_sorted, h_sorted = minutes[order], cols.hashes[order]
        keep_sorted = np.ones(len(order), dtype=bool)
        keep_sorted[1:] = (m_sorted[1:] != m_sorted[:-1]) | (h_sorted[1:] != h_sorted[:-1])
        bounds = np.flatnonzero(m_sorted[1:] != m_sorted[:-1]) + 1
        starts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), len(order)]
        for s, e in zip(starts, ends, strict=True):
            minute = int(m_sorted[s])
            old = self.seen.get(minute)
            if old is not None and len(old):
                block = h_sorted[s:e]
                pos = np.minimum(np.searchsorted(old, block), len(old) - 1)
                keep_sorted[s:e] &= old[pos] != block
                merged = np.concatenate((old, block[keep_sorted[s:e]]))
                merged.sort(kind="stable")  # two sorted runs: a linear merge
                self.seen[minute] = merged
            else:
                self.seen[minute] = h_sorted[s:e][keep_sorted[s:e]]
        if keep_sorted.all():
            return cols, None
        keep = np.empty(len(order), dtype=bool)
        keep[order] = keep_sorted
        return cols.take(keep), keep

    def fold(self, cols: FoldColumns) -> set[int]:
        """Aggregate de-duplicated rows into every window; returns the 1-minute buckets touched.

        One sort groups the rows by (minute, combination); every coarser grouping (a longer
        window, or all combinations together) is then computed from those groups and their
        (group, sketch bin) pairs, which are far fewer than the rows. The windows nest
        (1m in 5m in 15m in 1h in 6h in 1d), so each level is built from the one below.
        """
        if not len(cols.ts):
            return set()
        self.version += 1
        span = len(self.combo_list) + 1
        minutes = np.floor_divide(cols.ts, 60.0).astype(np.int64)
        level = Level.from_rows(minutes * span + cols.cid, cols)  # (bucket index, combination)
        touched: set[int] = set()
        previous = 60
        for window in WINDOWS_S:
            if window > previous:
                starts_s = (level.keys // span) * previous
                level = level.coarsen((starts_s // window) * span + level.keys % span)
                previous = window
            self._apply(window, level, (level.keys // span) * window, level.keys % span)
            total = level.coarsen(level.keys // span)
            self._apply(window, total, total.keys * window, np.full(len(total.keys), ALL))
            if window == 60:
                touched = set((total.keys * window).tolist())
        return touched

    def _apply(self, window: int, level: Level, starts: np.ndarray, cids: np.ndarray) -> None:
        """Add one level's group statistics and sketch pairs into its accumulators."""
        buckets = self.windows[window]
        accs = []
        for start, c, n, met, rts, rmin, rmax, ds, dmin, dmax in zip(
            starts.tolist(),
            cids.tolist(),
            level.count.tolist(),
            level.met.tolist(),
            level.rt_sum.tolist(),
            level.rt_min.tolist(),
            level.rt_max.tolist(),
            level.d_sum.tolist(),
            level.d_min.tolist(),
            level.d_max.tolist(),
            strict=True,
        ):
            bucket = buckets.get(start)
            if bucket is None:
                bucket = buckets[start] = {}
            acc = bucket.get(c)
            if acc is None:
                acc = bucket[c] = Accumulator()
            acc.count += n
            acc.rt.count += n  # their bins come from the level's pairs below
            acc.dist.count += n
            acc.met += met
            acc.rt_sum += rts
            acc.d_sum += ds
            if rmin < acc.rt_min:
                acc.rt_min = rmin
            if rmax > acc.rt_max:
                acc.rt_max = rmax
            if dmin < acc.d_min:
                acc.d_min = dmin
            if dmax > acc.d_max:
                acc.d_max = dmax
            accs.append(acc)
        level.rt_pairs.add_to([a.rt for a in accs])
        level.d_pairs.add_to([a.dist for a in accs])

    def evict(self, cutoff_s: float) -> int:
        """Drop every bucket that ends at or before ``cutoff_s``; returns how many."""
        dropped = 0
        for window, buckets in self.windows.items():
            old = [b for b in buckets if b + window <= cutoff_s]
            for b in old:
                del buckets[b]
            dropped += len(old)
        for minute in [m for m in self.seen if (m + 1) * 60 <= cutoff_s]:
            del self.seen[minute]
        if dropped:
            self.version += 1
        return dropped

    def to_wire(self) -> dict[str, Any]:
        """Everything needed to restore this store, msgpack-friendly."""
        return {
            "combos": [list(c) for c in self.combo_list],
            "windows": {
                str(w): [
                    [b, c, acc.to_wire()]
                    for b, bucket in buckets.items()
                    for c, acc in bucket.items()
                ]
                for w, buckets in self.windows.items()
            },
            "seen": {str(m): h.tobytes() for m, h in self.seen.items()},
            "accuracy": RELATIVE_ACCURACY,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> OrgStore:
        """Rebuild a store from ``to_wire()`` output."""
        store = cls()
        accuracy = data.get("accuracy", 0.005)  # checkpoints before it was recorded: 0.5 %
        for combo in data["combos"]:
            store.combo_id((str(combo[0]), str(combo[1]), str(combo[2])))
        for w, rows in data["windows"].items():
            buckets = store.windows[int(w)]
            for b, c, acc in rows:
                buckets.setdefault(int(b), {})[int(c)] = Accumulator.from_wire(acc, accuracy)
        store.seen = {
            int(m): np.frombuffer(h, dtype=np.uint64).copy() for m, h in data["seen"].items()
        }
        return store

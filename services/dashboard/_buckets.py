"""Aligned time buckets per org: count/sum/min/max/sketch per window x bucket x dimension combo.

Layout (why): every window (1m ... 1d) keeps its own buckets, each holding one ``Accumulator``
per full dimension combination (region, severity, unit_type) plus one for all combinations
(``ALL``). A query for any dimension subset then merges at most one accumulator per matching
combination per bucket, and an unfiltered query (the snapshot, the trend chart) reads one
accumulator per bucket. Rolling windows up at ingest costs six groupings per fold, which numpy
does for a whole buffer at once (``OrgStore.fold``), so the per-event Python work stays in the
validation pass. Memory is bounded by orgs x buckets within retention x combinations in use;
duplicate ids are kept as sorted 64-bit hashes per minute and evicted with their minute.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.dashboard._sketch import INV_LOG_GAMMA, ZERO_BIN, LogSketch

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
    def from_wire(cls, data: list[Any]) -> Accumulator:
        """Rebuild from ``to_wire()`` output."""
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
        acc.rt = LogSketch(dict(zip(data[8], data[9], strict=True)))
        acc.dist = LogSketch(dict(zip(data[10], data[11], strict=True)))
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


def _sketch_index(values: np.ndarray) -> np.ndarray:
    positive = values > 0.0
    logs = np.log(np.where(positive, values, 1.0))
    return np.where(positive, np.ceil(logs * INV_LOG_GAMMA), ZERO_BIN).astype(np.int64)


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
        bounds = np.flatnonzero(np.diff(m_sorted)) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        ends = [*bounds.tolist(), len(order)]
        for s, e in zip(starts, ends, strict=True):
            minute = int(m_sorted[s])
            fresh = h_sorted[s:e][keep_sorted[s:e]]
            old = self.seen.get(minute)
            if old is not None and len(old):
                pos = np.minimum(np.searchsorted(old, h_sorted[s:e]), len(old) - 1)
                keep_sorted[s:e] &= old[pos] != h_sorted[s:e]
                fresh = h_sorted[s:e][keep_sorted[s:e]]
                self.seen[minute] = np.union1d(old, fresh)
            else:
                self.seen[minute] = fresh.copy()
        keep = np.empty(len(order), dtype=bool)
        keep[order] = keep_sorted
        if keep.all():
            return cols, None
        return cols.take(keep), keep

    def fold(self, cols: FoldColumns) -> set[int]:
        """Aggregate de-duplicated rows into every window; returns the 1-minute buckets touched."""
        if not len(cols.ts):
            return set()
        self.version += 1
        rt_k, d_k = _sketch_index(cols.rt), _sketch_index(cols.dist)
        all_cid = np.full(len(cols.ts), ALL, dtype=np.int64)
        touched: set[int] = set()
        for window in WINDOWS_S:
            starts = (np.floor_divide(cols.ts, window) * window).astype(np.int64)
            for cid in (cols.cid, all_cid):
                keys = self._fold_window(window, starts, cid, cols, rt_k, d_k)
                if window == 60 and cid is all_cid:
                    touched = keys
        return touched

    def _fold_window(
        self,
        window: int,
        starts: np.ndarray,
        cid: np.ndarray,
        cols: FoldColumns,
        rt_k: np.ndarray,
        d_k: np.ndarray,
    ) -> set[int]:
        span = len(self.combo_list) + 2  # cid in [-1, len) -> cid + 1 in [0, span)
        key = (starts // window) * span + (cid + 1)
        ukey, inv = np.unique(key, return_inverse=True)
        counts = np.bincount(inv)
        order = np.argsort(inv, kind="stable")
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rt_o, d_o = cols.rt[order], cols.dist[order]
        stats = zip(
            ((ukey // span) * window).tolist(),
            (ukey % span - 1).tolist(),
            counts.tolist(),
            np.bincount(inv, weights=cols.met).astype(np.int64).tolist(),
            np.bincount(inv, weights=cols.rt).tolist(),
            np.minimum.reduceat(rt_o, first).tolist(),
            np.maximum.reduceat(rt_o, first).tolist(),
            np.bincount(inv, weights=cols.dist).tolist(),
            np.minimum.reduceat(d_o, first).tolist(),
            np.maximum.reduceat(d_o, first).tolist(),
            strict=True,
        )
        buckets = self.windows[window]
        accs = []
        for start, c, n, met, rts, rmin, rmax, ds, dmin, dmax in stats:
            bucket = buckets.get(start)
            if bucket is None:
                bucket = buckets[start] = {}
            acc = bucket.get(c)
            if acc is None:
                acc = bucket[c] = Accumulator()
            acc.count += n
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
        _add_bins(inv, rt_k, [a.rt for a in accs])
        _add_bins(inv, d_k, [a.dist for a in accs])
        return set(((ukey // span) * window).tolist())

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
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> OrgStore:
        """Rebuild a store from ``to_wire()`` output."""
        store = cls()
        for combo in data["combos"]:
            store.combo_id((str(combo[0]), str(combo[1]), str(combo[2])))
        for w, rows in data["windows"].items():
            buckets = store.windows[int(w)]
            for b, c, acc in rows:
                buckets.setdefault(int(b), {})[int(c)] = Accumulator.from_wire(acc)
        store.seen = {
            int(m): np.frombuffer(h, dtype=np.uint64).copy() for m, h in data["seen"].items()
        }
        return store


def _add_bins(inv: np.ndarray, k: np.ndarray, sketches: list[LogSketch]) -> None:
    """Add each row's sketch bin to its group's sketch, counting equal (group, bin) pairs once."""
    kmin = int(k.min())
    span = int(k.max()) - kmin + 1
    upair, pcount = np.unique(inv.astype(np.int64) * span + (k - kmin), return_counts=True)
    groups = upair // span
    bins = upair % span + kmin
    bounds = np.flatnonzero(np.diff(groups)) + 1
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), len(groups)]
    gids = groups[starts].tolist() if len(groups) else []
    ks, ns = bins.tolist(), pcount.tolist()
    for g, s, e in zip(gids, starts, ends, strict=True):
        sketches[g].add_counts(ks[s:e], ns[s:e])

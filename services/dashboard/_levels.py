"""Vectorised grouping for a fold: per-group statistics and (group, sketch bin) pair counts.

A fold groups a buffer of events by (bucket, combination) for six windows, and again for all
combinations together. Sorting every event twelve times was most of the fold's cost, so the
events are sorted once into their finest groups (1 minute x combination) and every coarser
grouping is computed from the groups below it (``_Level.coarsen``): a few hundred groups and a
few thousand sketch pairs instead of every event. Sums add group sums, so they can differ from a
flat sum in the last bits only (the rounding of float addition), as any order change would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from services.dashboard._sketch import INV_LOG_GAMMA, ZERO_BIN, LogSketch

if TYPE_CHECKING:
    from services.dashboard._buckets import FoldColumns

__all__ = ["Level", "sketch_index"]


def sketch_index(values: np.ndarray) -> np.ndarray:
    """``_sketch.bin_index`` of every value, vectorised."""
    positive = values > 0.0
    logs = np.log(np.where(positive, values, 1.0))
    return np.where(positive, np.ceil(logs * INV_LOG_GAMMA), ZERO_BIN).astype(np.int64)


class _Pairs:
    """How many rows of each group fall into each sketch bin, sorted by (group, bin)."""

    __slots__ = ("bins", "counts", "groups")

    def __init__(self, groups: np.ndarray, bins: np.ndarray, counts: np.ndarray) -> None:
        self.groups, self.bins, self.counts = groups, bins, counts

    @classmethod
    def count(cls, groups: np.ndarray, bins: np.ndarray, weights: np.ndarray | None) -> _Pairs:
        """Sum ``weights`` (1 per row when ``None``) per distinct (group, bin)."""
        kmin = int(bins.min())
        kspan = int(bins.max()) - kmin + 1
        keys = groups * kspan + (bins - kmin)
        if weights is None:
            ukeys, counts = np.unique(keys, return_counts=True)
        else:
            ukeys, inv = np.unique(keys, return_inverse=True)
            counts = np.bincount(inv, weights=weights, minlength=len(ukeys)).astype(np.int64)
        return cls(ukeys // kspan, ukeys % kspan + kmin, counts)

    def coarsen(self, parent: np.ndarray) -> _Pairs:
        """The pairs once each group ``g`` is merged into group ``parent[g]``."""
        return _Pairs.count(parent[self.groups], self.bins, self.counts)

    def add_to(self, sketches: list[LogSketch]) -> None:
        """Add each group's bin counts into ``sketches[group]``.

        Only the bins: the caller adds each group's row count to ``LogSketch.count`` (it
        has it per group already). One call per group: a small sketch takes its pairs as dict
        updates, a large (dense) one as a single numpy addition.
        """
        groups = self.groups
        if not len(groups):
            return
        edges = [0, *(np.flatnonzero(groups[1:] != groups[:-1]) + 1).tolist(), len(groups)]
        owners = groups[edges[:-1]].tolist()
        bins, counts = self.bins, self.counts
        bin_list, count_list = bins.tolist(), counts.tolist()
        for owner, start, end in zip(owners, edges, edges[1:], strict=False):
            sketches[owner].add_pairs(bins, counts, bin_list, count_list, start, end)


class Level:
    """Groups of one grouping: sorted keys, exact statistics and sketch pairs per group."""

    __slots__ = (
        "count",
        "d_max",
        "d_min",
        "d_pairs",
        "d_sum",
        "keys",
        "met",
        "rt_max",
        "rt_min",
        "rt_pairs",
        "rt_sum",
    )

    keys: np.ndarray
    count: np.ndarray
    met: np.ndarray
    rt_sum: np.ndarray
    rt_min: np.ndarray
    rt_max: np.ndarray
    d_sum: np.ndarray
    d_min: np.ndarray
    d_max: np.ndarray
    rt_pairs: _Pairs
    d_pairs: _Pairs

    @classmethod
    def from_rows(cls, keys: np.ndarray, cols: FoldColumns) -> Level:
        """Group the rows of ``cols`` by ``keys`` (one sort)."""
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        new = np.empty(len(keys), dtype=bool)
        new[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
        first = np.flatnonzero(new)
        inv = np.empty(len(keys), dtype=np.int64)
        inv[order] = np.cumsum(new) - 1
        n = len(first)
        level = cls()
        level.keys = sorted_keys[first]
        level.count = np.diff(np.append(first, len(keys)))
        level.met = np.bincount(inv, weights=cols.met, minlength=n).astype(np.int64)
        level.rt_sum = np.bincount(inv, weights=cols.rt, minlength=n)
        level.d_sum = np.bincount(inv, weights=cols.dist, minlength=n)
        rt_o, d_o = cols.rt[order], cols.dist[order]
        level.rt_min = np.minimum.reduceat(rt_o, first)
        level.rt_max = np.maximum.reduceat(rt_o, first)
        level.d_min = np.minimum.reduceat(d_o, first)
        level.d_max = np.maximum.reduceat(d_o, first)
        level.rt_pairs = _Pairs.count(inv, sketch_index(cols.rt), None)
        level.d_pairs = _Pairs.count(inv, sketch_index(cols.dist), None)
        return level

    def coarsen(self, parent_keys: np.ndarray) -> Level:
        """Merge the groups whose ``parent_keys`` (one per group) are equal."""
        ukeys, inv = np.unique(parent_keys, return_inverse=True)
        n = len(ukeys)
        out = Level()
        out.keys = ukeys
        out.count = np.bincount(inv, weights=self.count, minlength=n).astype(np.int64)
        out.met = np.bincount(inv, weights=self.met, minlength=n).astype(np.int64)
        out.rt_sum = np.bincount(inv, weights=self.rt_sum, minlength=n)
        out.d_sum = np.bincount(inv, weights=self.d_sum, minlength=n)
        out.rt_min = _at(np.minimum, np.inf, inv, self.rt_min, n)
        out.rt_max = _at(np.maximum, -np.inf, inv, self.rt_max, n)
        out.d_min = _at(np.minimum, np.inf, inv, self.d_min, n)
        out.d_max = _at(np.maximum, -np.inf, inv, self.d_max, n)
        out.rt_pairs = self.rt_pairs.coarsen(inv)
        out.d_pairs = self.d_pairs.coarsen(inv)
        return out


def _at(ufunc: np.ufunc, start: float, inv: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, start)
    ufunc.at(out, inv, values)
    return out

"""A mergeable relative-error quantile sketch (DDSketch-style logarithmic buckets).

Why not the PyPI ``ddsketch`` package: its ``add`` is a Python method call per value (about
1 us each), and the dashboard folds values in bulk with numpy (``add_counts``) at well under
100 ns each, so a compact sketch of our own keeps ingest near the client's decode speed.

A positive value ``x`` goes to bin ``k = ceil(log(x) / log(gamma))`` with
``gamma = (1 + a) / (1 - a)``; the bin's representative ``2 * gamma**k / (gamma + 1)`` is within
relative error ``a`` of every value in the bin. Zero has its own exact bin. A quantile is read at
the two closest ranks and interpolated linearly, the same rule as
``ionveil.statistics.percentile`` (type 7), so the estimate stays within ``a`` of it
(ARCHITECTURE.md, "Percentiles"). Sketches merge by adding bin counts, which is what lets
time buckets and replicas combine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RELATIVE_ACCURACY", "LogSketch", "bin_index", "bin_value"]

RELATIVE_ACCURACY = 0.005
GAMMA = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
ZERO_BIN = -(1 << 30)
"""Key of the exact-zero bin (far below any real bin index, so it sorts first)."""


def bin_index(value: float) -> int:
    """The bin a non-negative finite value belongs to."""
    if value <= 0.0:
        return ZERO_BIN
    return math.ceil(math.log(value) * INV_LOG_GAMMA)


def bin_value(index: int) -> float:
    """The representative value of a bin (0.0 for the zero bin)."""
    if index == ZERO_BIN:
        return 0.0
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


class LogSketch:
    """Counts per logarithmic bin; mergeable, serialisable, bounded by the value range."""

    __slots__ = ("bins", "count")

    def __init__(self, bins: dict[int, int] | None = None) -> None:
        self.bins: dict[int, int] = bins if bins is not None else {}
        self.count = sum(self.bins.values())

    def add(self, value: float, n: int = 1) -> None:
        """Add ``n`` occurrences of a non-negative finite value."""
        k = bin_index(value)
        self.bins[k] = self.bins.get(k, 0) + n
        self.count += n

    def add_counts(self, indexes: Iterable[int], counts: Iterable[int]) -> None:
        """Add precomputed ``(bin index, count)`` pairs (the vectorised ingest path)."""
        bins = self.bins
        get = bins.get
        total = 0
        for k, n in zip(indexes, counts, strict=True):
            bins[k] = get(k, 0) + n
            total += n
        self.count += total

    def merge(self, other: LogSketch) -> None:
        """Add every count of ``other`` into this sketch."""
        if not other.count:
            return
        bins = self.bins
        if not bins:
            bins.update(other.bins)
        else:
            get = bins.get
            for k, n in other.bins.items():
                bins[k] = get(k, 0) + n
        self.count += other.count

    def copy(self) -> LogSketch:
        """An independent copy."""
        return LogSketch(dict(self.bins))

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1), interpolated between the two closest ranks.

        Raises:
            ValueError: the sketch is empty or ``q`` is outside [0, 1].
        """
        return merged_quantiles([self], [q])[0]

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-friendly form: ``{"k": [indexes], "n": [counts]}``."""
        return {"k": list(self.bins), "n": list(self.bins.values())}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> LogSketch:
        """Rebuild a sketch from ``to_wire()`` output."""
        return cls(dict(zip(data["k"], data["n"], strict=True)))


def merged_quantiles(sketches: Iterable[LogSketch], qs: list[float]) -> list[float]:
    """Quantiles of the union of ``sketches`` without building a merged copy first."""
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    parts = [s for s in sketches if s.count]
    if not parts:
        raise ValueError("quantile of an empty sketch")
    if len(parts) == 1:
        bins = parts[0].bins
    else:
        bins = {}
        get = bins.get
        for s in parts:
            for k, n in s.bins.items():
                bins[k] = get(k, 0) + n
    keys = sorted(bins)
    total = sum(bins.values())
    out = []
    for q in qs:
        rank = (total - 1) * q
        lo = math.floor(rank)
        hi = min(lo + 1, total - 1)
        v_lo, v_hi = _values_at(keys, bins, lo, hi)
        out.append(v_lo + (v_hi - v_lo) * (rank - lo))
    return out


def _values_at(keys: list[int], bins: dict[int, int], lo: int, hi: int) -> tuple[float, float]:
    """Representative values at 0-based ranks ``lo`` <= ``hi`` of the sorted bins."""
    seen = 0
    v_lo = None
    for k in keys:
        seen += bins[k]
        if v_lo is None and lo < seen:
            v_lo = bin_value(k)
        if hi < seen:
            assert v_lo is not None
            return v_lo, bin_value(k)
    raise ValueError("rank beyond the sketch's count")  # pragma: no cover - callers bound ranks

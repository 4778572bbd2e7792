"""A mergeable relative-error quantile sketch (DDSketch-style logarithmic buckets).

Why not the PyPI ``ddsketch`` package: its ``add`` is a Python method call per value (about
1 us each), while the dashboard folds values in bulk (numpy groups a buffer's rows into
(bin, count) pairs that are added to ``bins`` directly, see ``_levels``) at well under 100 ns
each, so a compact sketch of our own keeps ingest near the client's decode speed.

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
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

__all__ = [
    "RELATIVE_ACCURACY",
    "LogSketch",
    "bin_index",
    "bin_value",
    "rebin",
    "series_quantiles",
]

RELATIVE_ACCURACY = 0.008
"""0.8 %: inside the 1 % the dashboard promises, with 38 % fewer bins than 0.5 % (every bin is a
dict update at ingest, the dominant cost of a fold). Checkpoints record it (``rebin``)."""
GAMMA = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
_CACHED_MIN_BINS = 32
_PYTHON_MAX_BINS = 256
"""Sketches this large keep a numpy copy of their bins for queries (``LogSketch.arrays``)."""
DENSE_AFTER_BINS = 64
"""A sketch with more bins than this keeps them in a dense array (see ``LogSketch``)."""
_DENSE_MARGIN = 16
"""Spare bins on each side of a dense array, so nearby new values rarely make it grow."""
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


def rebin(bins: dict[int, int], accuracy: float) -> dict[int, int]:
    """Bins made with another relative ``accuracy`` (an older checkpoint) moved to ours.

    Each old bin's representative value goes to the bin it falls in now, so restored
    percentiles are within the old plus the new accuracy (about 1.3 % from 0.5 %) until the
    restored buckets age out; new data keeps the full accuracy.
    """
    if accuracy == RELATIVE_ACCURACY:
        return bins
    gamma = (1.0 + accuracy) / (1.0 - accuracy)
    out: dict[int, int] = {}
    for k, n in bins.items():
        value = 0.0 if k == ZERO_BIN else 2.0 * gamma**k / (gamma + 1.0)
        new = bin_index(value)
        out[new] = out.get(new, 0) + n
    return out


class LogSketch:
    """Counts per logarithmic bin; mergeable, serialisable, bounded by the value range.

    Two layouts: a dict of bin -> count while the sketch is small (most one-minute buckets of
    one dimension combination hold a handful of values), and a dense numpy array over the
    bins' range once it has more than ``DENSE_AFTER_BINS`` bins (coarse buckets and busy
    minutes). A fold then adds a whole group of (bin, count) pairs with one numpy operation
    instead of one dict update per pair, and a large sketch takes less memory than a dict.

    ``count`` is the total of all bins; every writer raises it (counts only grow), which is
    what lets ``arrays()`` cache its numpy copy until the next write. The fold adds bins with
    ``add_pairs`` and raises ``count`` itself (it has the group totals already).
    """

    __slots__ = ("_arrays", "_dense", "_lo", "_table", "_zero", "count")

    def __init__(self, bins: dict[int, int] | None = None) -> None:
        self._table: dict[int, int] = bins if bins is not None else {}
        self._dense: np.ndarray | None = None
        self._lo = 0
        self._zero = 0  # the zero bin's count once dense (ZERO_BIN is far outside any range)
        self.count = sum(self._table.values()) if bins else 0
        self._arrays: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        if len(self._table) > DENSE_AFTER_BINS:
            self._densify()

    @property
    def bins(self) -> dict[int, int]:
        """Bin index -> count. The live table while small; a copy once dense (read only)."""
        if self._dense is None:
            return self._table
        keys, counts = self.arrays()
        return dict(zip(keys.tolist(), counts.tolist(), strict=True))

    @property
    def is_dense(self) -> bool:
        """Whether the bins are held as a dense array (a large sketch)."""
        return self._dense is not None

    def __len__(self) -> int:
        """The number of non-empty bins."""
        if self._dense is None:
            return len(self._table)
        return len(self.arrays()[0])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bin indexes, counts)`` as int64 arrays, cached while ``count`` is unchanged.

        Queries merge thousands of (mostly closed, unchanging) bucket sketches; reading each
        one into arrays once instead of per query keeps a filtered 24-hour percentile query
        (288 buckets x 15 combinations) within a few milliseconds of numpy work.
        """
        cached = self._cached()
        return cached[1], cached[2]

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bin indexes ascending, cumulative counts)``, cached like :meth:`arrays`.

        A query over one sketch (an unfiltered bucket, the common dashboard case) then needs
        only a binary search, no sort.
        """
        cached = self._cached()
        return cached[1], cached[3]

    def _cached(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        cached = self._arrays
        if cached is None or cached[0] != self.count:
            if self._dense is None:
                size = len(self._table)
                keys = np.fromiter(self._table, dtype=np.int64, count=size)
                counts = np.fromiter(self._table.values(), dtype=np.int64, count=size)
                order = np.argsort(keys)
                keys, counts = keys[order], counts[order]
            else:
                filled = np.flatnonzero(self._dense)
                keys, counts = filled + self._lo, self._dense[filled]
                if self._zero:
                    keys = np.concatenate(([ZERO_BIN], keys))
                    counts = np.concatenate(([self._zero], counts))
            cached = self._arrays = (self.count, keys, counts, np.cumsum(counts))
        return cached

    def add(self, value: float, n: int = 1) -> None:
        """Add ``n`` occurrences of a non-negative finite value."""
        k = bin_index(value)
        if self._dense is None:
            self._table[k] = self._table.get(k, 0) + n
            if len(self._table) > DENSE_AFTER_BINS:
                self._densify()
        else:
            self._add_dense(np.array([k], dtype=np.int64), np.array([n], dtype=np.int64))
        self.count += n

    def add_pairs(
        self,
        keys: np.ndarray,
        counts: np.ndarray,
        key_list: list[int],
        count_list: list[int],
        start: int,
        end: int,
    ) -> None:
        """Add the pairs ``[start, end)`` (distinct bins, ascending) without touching ``count``.

        The fold passes its whole pair columns both as arrays and as lists, so a small sketch
        takes its few pairs from the lists and a large one from the arrays, neither copied.
        """
        table = self._table
        if self._dense is None and len(table) + end - start <= DENSE_AFTER_BINS:
            get = table.get
            for k, n in zip(key_list[start:end], count_list[start:end], strict=True):
                table[k] = get(k, 0) + n
            return
        if self._dense is None:
            self._densify()
        self._add_dense(keys[start:end], counts[start:end])

    def _densify(self) -> None:
        table = self._table
        self._zero = table.pop(ZERO_BIN, 0)
        if table:
            keys = np.fromiter(table, dtype=np.int64, count=len(table))
            counts = np.fromiter(table.values(), dtype=np.int64, count=len(table))
            self._lo = int(keys.min()) - _DENSE_MARGIN
            self._dense = np.zeros(int(keys.max()) - self._lo + 1 + _DENSE_MARGIN, np.int64)
            self._dense[keys - self._lo] = counts
        else:
            self._dense = np.zeros(0, dtype=np.int64)
        self._table = {}

    def _add_dense(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add distinct ascending bins into the dense array, growing its range if needed."""
        if len(keys) and keys[0] == ZERO_BIN:
            self._zero += int(counts[0])
            keys, counts = keys[1:], counts[1:]
        if not len(keys):
            return
        dense = self._dense
        assert dense is not None
        lo, first, last = self._lo, int(keys[0]), int(keys[-1])
        if first < lo or last >= lo + len(dense):
            new_lo = min(lo, first - _DENSE_MARGIN) if len(dense) else first - _DENSE_MARGIN
            new_hi = max(lo + len(dense), last + 1 + _DENSE_MARGIN)
            grown = np.zeros(new_hi - new_lo, dtype=np.int64)
            grown[lo - new_lo : lo - new_lo + len(dense)] = dense
            self._dense, self._lo, dense, lo = grown, new_lo, grown, new_lo
        dense[keys - lo] += counts

    def merge(self, other: LogSketch) -> None:
        """Add every count of ``other`` into this sketch."""
        if not other.count:
            return
        if self._dense is None and other._dense is None:
            bins = self._table
            if not bins:
                bins.update(other._table)
            else:
                get = bins.get
                for k, n in other._table.items():
                    bins[k] = get(k, 0) + n
            if len(bins) > DENSE_AFTER_BINS:
                self._densify()
        else:
            if self._dense is None:
                self._densify()
            keys, counts = other.arrays()
            self._add_dense(keys, counts)
        self.count += other.count

    def copy(self) -> LogSketch:
        """An independent copy."""
        if self._dense is None:
            return LogSketch(dict(self._table))
        twin = LogSketch()
        twin._dense, twin._lo, twin._zero = self._dense.copy(), self._lo, self._zero
        twin.count = self.count
        return twin

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1), interpolated between the two closest ranks.

        Raises:
            ValueError: the sketch is empty or ``q`` is outside [0, 1].
        """
        return merged_quantiles([self], [q])[0]

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-friendly form: ``{"k": [indexes], "n": [counts]}``."""
        bins = self.bins
        return {"k": list(bins), "n": list(bins.values())}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> LogSketch:
        """Rebuild a sketch from ``to_wire()`` output."""
        return cls(dict(zip(data["k"], data["n"], strict=True)))


def merged_quantiles(sketches: Iterable[LogSketch], qs: list[float]) -> list[float]:
    """Quantiles of the union of ``sketches`` without building a merged copy first.

    The bins of every sketch (``LogSketch.arrays``, cached, for sketches of at least
    ``_CACHED_MIN_BINS`` bins; small ones are read together) are concatenated and sorted once
    with numpy; a rank is then found by binary search over the cumulative counts. Merging
    dicts bin by bin in Python made a filtered 24-hour percentile query (288 buckets x 15
    combinations) cost tens of milliseconds.
    """
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    key_parts: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    large: list[LogSketch] = []
    small: list[dict[int, int]] = []  # read together: one pass, no per-sketch array overhead
    for s in sketches:
        if s.is_dense or len(s.bins) >= _CACHED_MIN_BINS:
            large.append(s)
        elif s.count:
            small.append(s.bins)
    size = sum(map(len, small))
    if not large and size <= _PYTHON_MAX_BINS:
        return _small_quantiles(small, qs)  # few bins (or none): numpy's fixed costs dominate
    if len(large) == 1 and not small:
        k, cumulative = large[0].cumulative()  # sorted and summed once per sketch version
    else:
        for sketch in large:
            keys, counts = sketch.arrays()
            key_parts.append(keys)
            count_parts.append(counts)
        if small:
            key_parts.append(np.fromiter(chain.from_iterable(small), dtype=np.int64, count=size))
            values = chain.from_iterable(map(dict.values, small))
            count_parts.append(np.fromiter(values, dtype=np.int64, count=size))
        k = key_parts[0] if len(key_parts) == 1 else np.concatenate(key_parts)
        n = count_parts[0] if len(count_parts) == 1 else np.concatenate(count_parts)
        order = np.argsort(k, kind="stable")  # runs of sorted parts: timsort merges them
        k = k[order]
        cumulative = np.cumsum(n[order])
    total = int(cumulative[-1])
    out = []
    for q in qs:
        rank = (total - 1) * q
        lo = math.floor(rank)
        hi = min(lo + 1, total - 1)
        # The value at 0-based rank r is the first bin whose cumulative count exceeds r.
        i_lo, i_hi = np.searchsorted(cumulative, [lo, hi], side="right").tolist()
        v_lo, v_hi = bin_value(int(k[i_lo])), bin_value(int(k[i_hi]))
        out.append(v_lo + (v_hi - v_lo) * (rank - lo))
    return out


_DENSE_MAX_CELLS = 4_000_000
"""Above this many (series entry x bin) cells ``series_quantiles`` goes entry by entry."""


def series_quantiles(series: Sequence[Sequence[LogSketch]], q: float) -> list[float]:
    """The ``q``-quantile of the union of each entry's sketches, for a whole series at once.

    Same result as ``merged_quantiles(entry, [q])[0]`` per entry, without numpy's fixed costs
    per entry: a filtered 24-hour query of 288 five-minute buckets x 12 combinations was
    288 sorts of a few hundred bins. Every entry's bins are counted into one dense
    (entry x bin) table with a single ``bincount`` (bins of real data span a few hundred
    indexes), and the ranks are found row-wise on its cumulative sums.

    Raises:
        ValueError: an entry without samples, or ``q`` outside [0, 1].
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    key_parts: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    owners: list[int] = []
    for entry, sketches in enumerate(series):
        for sketch in sketches:
            if sketch.count:
                keys, counts = sketch.arrays()
                key_parts.append(keys)
                count_parts.append(counts)
                owners.append(entry)
    rows = len(series)
    if not rows:
        return []
    if len(set(owners)) != rows:
        raise ValueError("quantile of an empty sketch")
    keys = np.concatenate(key_parts)
    counts = np.concatenate(count_parts)
    zero = keys == ZERO_BIN
    nonzero = keys[~zero]
    low = int(nonzero.min()) - 1 if len(nonzero) else 0  # the zero bin sits just below
    keys = np.where(zero, low, keys)
    span = int(keys.max()) - low + 1
    if rows * span > _DENSE_MAX_CELLS:  # pragma: no cover - values over ~30 decades
        return [merged_quantiles(sketches, [q])[0] for sketches in series]
    lengths = np.fromiter(map(len, key_parts), dtype=np.int64, count=len(key_parts))
    entry_of = np.repeat(np.asarray(owners, dtype=np.int64), lengths)
    table = np.bincount(entry_of * span + (keys - low), weights=counts, minlength=rows * span)
    cumulative = table.reshape(rows, span).cumsum(axis=1)
    total = cumulative[:, -1]
    rank = (total - 1.0) * q
    lo = np.floor(rank)
    hi = np.minimum(lo + 1.0, total - 1.0)
    # The value at 0-based rank r is at the first bin whose cumulative count exceeds r.
    i_lo = (cumulative <= lo[:, None]).sum(axis=1)
    i_hi = (cumulative <= hi[:, None]).sum(axis=1)
    v_lo = _bin_values(i_lo + low, low if len(nonzero) < len(keys) else None)
    v_hi = _bin_values(i_hi + low, low if len(nonzero) < len(keys) else None)
    return (v_lo + (v_hi - v_lo) * (rank - lo)).tolist()


def _bin_values(indexes: np.ndarray, zero_at: int | None) -> np.ndarray:
    """``bin_value`` of each index; ``zero_at`` is where the zero bin was placed, if used."""
    values = 2.0 * np.power(GAMMA, indexes.astype(np.float64)) / (GAMMA + 1.0)
    if zero_at is not None:
        values[indexes == zero_at] = 0.0
    return values


def _small_quantiles(tables: list[dict[int, int]], qs: list[float]) -> list[float]:
    """``merged_quantiles`` of a few small bin tables, merged in Python."""
    if not tables:
        raise ValueError("quantile of an empty sketch")
    bins = dict(tables[0])
    get = bins.get
    for table in tables[1:]:
        for k, n in table.items():
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

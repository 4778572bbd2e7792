"""Exact statistics used across IonVeil and as the reference for the streaming sketches.

``percentile`` is exact with linear interpolation between closest ranks (the method numpy calls
"linear", Hyndman & Fan type 7): the dashboard's mergeable sketches are tested against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HeatmapCell",
    "LinearFit",
    "generate_heatmap",
    "linear_regression",
    "mean",
    "moving_average",
    "percentile",
    "stddev",
]


def _finite(values: Iterable[float]) -> list[float]:
    data = [float(v) for v in values]
    if any(not math.isfinite(v) for v in data):
        raise ValueError("values must be finite numbers")
    return data


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean.

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    data = _finite(values)
    if not data:
        raise ValueError("mean of no values")
    return math.fsum(data) / len(data)


def stddev(values: Iterable[float], *, sample: bool = False) -> float:
    """Standard deviation: population by default, sample (n - 1) with ``sample=True``.

    Returns 0.0 for a single value (population) and raises for fewer than two with ``sample``.
    """
    data = _finite(values)
    if not data or (sample and len(data) < 2):
        raise ValueError("stddev needs at least one value (two for a sample)")
    mu = math.fsum(data) / len(data)
    ss = math.fsum((v - mu) ** 2 for v in data)
    return math.sqrt(ss / (len(data) - 1 if sample else len(data)))


def percentile(values: Iterable[float], pct: float) -> float:
    """The ``pct``-th percentile (0..100) by linear interpolation between closest ranks.

    Raises:
        ValueError: no values, a non-finite value, or ``pct`` outside [0, 100].
    """
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"pct must be within [0, 100], got {pct!r}")
    data = sorted(_finite(values))
    if not data:
        raise ValueError("percentile of no values")
    rank = (len(data) - 1) * pct / 100.0
    nearest = round(rank)
    if abs(rank - nearest) <= 1e-9 * max(1.0, rank):
        # pct = 100 * k / (n - 1) must give sample k itself: without this, rounding in the
        # rank (5.999999999 for 6) weighs in the next sample, visibly so across a large gap.
        rank = nearest
    lo = math.floor(rank)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving averages: element ``i`` averages ``values[max(0, i-window+1) .. i]``.

    The output has the input's length; the first ``window - 1`` entries average what exists so
    far, so a dashboard line starts at the first point instead of after a gap.

    Raises:
        ValueError: ``window`` < 1.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    data = _finite(values)
    out: list[float] = []
    running = _ExactSum()
    for i, v in enumerate(data):
        running.add(v)
        if i >= window:
            running.add(-data[i - window])
        out.append(running.value() / min(i + 1, window))
    return out


class _ExactSum:
    """A running sum without rounding drift (Shewchuk's partials, as behind ``math.fsum``).

    A plain float accumulator that adds and subtracts loses small values next to large ones
    (``[1e16, 1, 1]`` with a window of 1 gave ``[1e16, 0, 0]``); the partials keep it exact.
    """

    __slots__ = ("_partials",)

    def __init__(self) -> None:
        self._partials: list[float] = []

    def add(self, x: float) -> None:
        i = 0
        for y in self._partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self._partials[i] = lo
                i += 1
            x = hi
        self._partials[i:] = [x]

    def value(self) -> float:
        return math.fsum(self._partials)


@dataclass(frozen=True, slots=True)
class LinearFit:
    """Least-squares line ``y = slope * x + intercept`` and its coefficient of determination."""

    slope: float
    intercept: float
    r_squared: float
    n: int

    def predict(self, x: float) -> float:
        """The fitted value at ``x``."""
        return self.slope * x + self.intercept


def linear_regression(xs: Sequence[float], ys: Sequence[float]) -> LinearFit:
    """Ordinary least squares of ``ys`` on ``xs``.

    ``r_squared`` is 1.0 for a perfect fit and also when ``ys`` is constant (the line explains
    all of the zero variance); it is 0.0 when the line explains nothing.

    Raises:
        ValueError: fewer than two points, mismatched lengths, or all ``xs`` equal.
    """
    x, y = _finite(xs), _finite(ys)
    if len(x) != len(y):
        raise ValueError("xs and ys must have the same length")
    if len(x) < 2:
        raise ValueError("linear_regression needs at least two points")
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    sxx = math.fsum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise ValueError("xs must not all be equal")
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = math.fsum((b - my) ** 2 for b in y)
    ss_res = math.fsum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y, strict=True))
    r2 = 1.0 if ss_tot == 0 else max(0.0, 1.0 - ss_res / ss_tot)
    return LinearFit(slope, intercept, r2, len(x))


@dataclass(frozen=True, slots=True)
class HeatmapCell:
    """One grid cell: its position, the bounding box it covers, and its aggregated value."""

    row: int
    col: int
    value: float
    count: int
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def as_dict(self) -> dict[str, float | int]:
        """``{row, col, value, count, lat_min, lat_max, lon_min, lon_max}``."""
        return {
            "row": self.row,
            "col": self.col,
            "value": self.value,
            "count": self.count,
            "lat_min": self.lat_min,
            "lat_max": self.lat_max,
            "lon_min": self.lon_min,
            "lon_max": self.lon_max,
        }


def generate_heatmap(
    points: Iterable[tuple[float, float, float]],
    rows: int,
    cols: int,
    *,
    reduce: str = "sum",
    bounds: tuple[float, float, float, float] | None = None,
) -> list[HeatmapCell]:
    """Bin ``(lat, lon, value)`` points into a ``rows`` x ``cols`` grid over their bounding box.

    Row 0 is the northernmost band, column 0 the westernmost. Points on the max edge fall into
    the last cell. Cells with no points are returned with value 0 and count 0, so a renderer
    always gets the full grid, row-major.

    Args:
        points: ``(lat, lon, value)`` triples.
        rows: Grid rows (>= 1).
        cols: Grid columns (>= 1).
        reduce: ``"sum"``, ``"mean"`` or ``"count"`` per cell.
        bounds: ``(lat_min, lat_max, lon_min, lon_max)``; default the points' bounding box.

    Raises:
        ValueError: bad grid size or reducer, or a non-finite coordinate.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be at least 1x1, got {rows}x{cols}")
    if reduce not in ("sum", "mean", "count"):
        raise ValueError(f"reduce must be sum, mean or count, got {reduce!r}")
    pts = [(float(a), float(b), float(v)) for a, b, v in points]
    if any(not (math.isfinite(a) and math.isfinite(b) and math.isfinite(v)) for a, b, v in pts):
        raise ValueError("heatmap points must be finite")
    if bounds is None:
        if pts:
            lats, lons = [p[0] for p in pts], [p[1] for p in pts]
            bounds = (min(lats), max(lats), min(lons), max(lons))
        else:
            bounds = (0.0, 0.0, 0.0, 0.0)
    lat_min, lat_max, lon_min, lon_max = bounds
    if lat_min > lat_max or lon_min > lon_max:
        raise ValueError(f"bounds must be (lat_min, lat_max, lon_min, lon_max), got {bounds!r}")
    lat_span = (lat_max - lat_min) or 1e-9
    lon_span = (lon_max - lon_min) or 1e-9
    sums = [[0.0] * cols for _ in range(rows)]
    counts = [[0] * cols for _ in range(rows)]
    for lat, lon, value in pts:
        if not (lat_min <= lat <= lat_max and lon_min <= lon <= lon_max):
            continue
        row = min(rows - 1, int((lat_max - lat) / lat_span * rows))
        col = min(cols - 1, int((lon - lon_min) / lon_span * cols))
        sums[row][col] += value
        counts[row][col] += 1
    cells = []
    for r in range(rows):
        for c in range(cols):
            n = counts[r][c]
            if reduce == "count":
                value = float(n)
            elif reduce == "mean":
                value = sums[r][c] / n if n else 0.0
            else:
                value = sums[r][c]
            cells.append(
                HeatmapCell(
                    r,
                    c,
                    value,
                    n,
                    lat_max - (r + 1) * lat_span / rows,
                    lat_max - r * lat_span / rows,
                    lon_min + c * lon_span / cols,
                    lon_min + (c + 1) * lon_span / cols,
                )
            )
    return cells

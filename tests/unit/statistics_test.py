"""ionveil.statistics against hand-computed answers and hypothesis properties (no numpy)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionveil.statistics import (
    HeatmapCell,
    generate_heatmap,
    linear_regression,
    mean,
    moving_average,
    percentile,
    stddev,
)

# Magnitudes of response times and distances; wide enough to mix large and small values.
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=60)


# --- mean / stddev ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 3, 4], 2.5), ([7], 7.0), ([0.1] * 10, 0.1), ([1e16, 1, -1e16], 1 / 3)],
)
def test_mean_hand_computed(values: list[float], expected: float) -> None:
    """The mean is exact even where naive summation would cancel (fsum)."""
    assert mean(values) == pytest.approx(expected)


def test_stddev_hand_computed() -> None:
    """Population and sample standard deviations of 2,4,4,4,5,5,7,9 are 2 and sqrt(32/7)."""
    data = [2, 4, 4, 4, 5, 5, 7, 9]
    assert stddev(data) == pytest.approx(2.0)
    assert stddev(data, sample=True) == pytest.approx(math.sqrt(32 / 7))
    assert stddev([3.0]) == 0.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mean([]), "no values"),
        (lambda: mean([1, float("nan")]), "finite"),
        (lambda: stddev([]), "at least one"),
        (lambda: stddev([1.0], sample=True), "two"),
        (lambda: stddev([float("inf")]), "finite"),
    ],
)
def test_mean_and_stddev_refuse_bad_input(call: object, match: str) -> None:
    """Empty or non-finite input is a ValueError, never a NaN result."""
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


@settings(deadline=None)
@given(samples)
def test_mean_lies_within_range_and_stddev_is_non_negative(values: list[float]) -> None:
    """Property: min <= mean <= max and stddev >= 0; shifting data leaves stddev unchanged."""
    m = mean(values)
    assert min(values) - 1e-6 <= m <= max(values) + 1e-6
    sd = stddev(values)
    assert sd >= 0
    shifted = [v + 1000.0 for v in values]
    assert stddev(shifted) == pytest.approx(sd, rel=1e-6, abs=1e-3)


# --- percentile ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 100, 4),
        ([1, 2, 3, 4], 25, 1.75),  # rank 0.75 between 1 and 2
        ([10, 20, 30, 40, 50], 90, 46),  # rank 3.6 -> 40 + 0.6 * 10
        ([15, 20, 35, 40, 50], 40, 29),  # rank 1.6 -> 20 + 0.6 * 15
        ([4, 1, 3, 2], 50, 2.5),  # unsorted input
        ([5], 99, 5),
        ([3, 3, 3], 75, 3),
    ],
)
def test_percentile_hand_computed(values: list[float], pct: float, expected: float) -> None:
    """Linear interpolation between closest ranks (rank = (n - 1) * pct / 100)."""
    assert percentile(values, pct) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "pct", "match"),
    [([], 50, "no values"), ([1], -1, "pct"), ([1], 100.5, "pct"), ([1], float("nan"), "pct"),
     ([1, float("inf")], 50, "finite")],
)  # fmt: skip
def test_percentile_refuses_bad_input(values: list[float], pct: float, match: str) -> None:
    """No values, a pct outside [0, 100] or a non-finite value is a ValueError."""
    with pytest.raises(ValueError, match=match):
        percentile(values, pct)


@settings(deadline=None)
@given(samples, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_is_monotonic_and_bounded(values: list[float], p: float, q: float) -> None:
    """Property: min <= P(p) <= max, P(0) = min, P(100) = max, and P is non-decreasing in p."""
    lo, hi = sorted((p, q))
    assert min(values) <= percentile(values, lo) <= percentile(values, hi) <= max(values)
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)


@settings(deadline=None)
@given(st.lists(finite, min_size=1, max_size=60, unique=True))
def test_percentile_hits_each_sample_at_its_rank(values: list[float]) -> None:
    """Property: at pct = 100 * k / (n - 1) the percentile is exactly the k-th smallest value."""
    data = sorted(values)
    n = len(data)
    for k in range(n):
        pct = 100.0 * k / (n - 1) if n > 1 else 50.0
        assert percentile(values, pct) == pytest.approx(data[k], rel=1e-9, abs=1e-6)


# --- moving_average --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "window", "expected"),
    [
        ([1, 2, 3, 4, 5], 3, [1, 1.5, 2, 3, 4]),
        ([1, 2, 3], 1, [1, 2, 3]),
        ([2, 4], 5, [2, 3]),
        ([], 3, []),
        ([1e16, 1, 1, 1], 1, [1e16, 1, 1, 1]),  # no cancellation drift
        ([1e16, 1, 1, 1], 2, [1e16, 5e15, 1, 1]),
    ],
)
def test_moving_average_hand_computed(
    values: list[float], window: int, expected: list[float]
) -> None:
    """Trailing averages; the first entries average what exists so far."""
    assert moving_average(values, window) == pytest.approx(expected)


def test_moving_average_refuses_bad_window() -> None:
    """A window below 1 is a ValueError naming window."""
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)


@settings(deadline=None)
@given(samples, st.integers(min_value=1, max_value=10))
def test_moving_average_equals_mean_of_each_window(values: list[float], window: int) -> None:
    """Property: entry i is the exact mean of values[max(0, i - window + 1) .. i]."""
    out = moving_average(values, window)
    assert len(out) == len(values)
    for i, got in enumerate(out):
        chunk = values[max(0, i - window + 1) : i + 1]
        assert got == pytest.approx(math.fsum(chunk) / len(chunk), rel=1e-9, abs=1e-9)


# --- linear_regression -----------------------------------------------------------------------


def test_linear_regression_perfect_line() -> None:
    """Points on y = 2x + 1 give slope 2, intercept 1, r² 1."""
    fit = linear_regression([0, 1, 2, 3], [1, 3, 5, 7])
    assert (fit.slope, fit.intercept, fit.r_squared, fit.n) == pytest.approx((2, 1, 1, 4))
    assert fit.predict(10) == pytest.approx(21)


def test_linear_regression_hand_computed_noisy() -> None:
    """x = 1..5, y = 2, 4, 5, 4, 5: slope 0.6, intercept 2.2, r² 0.6 (textbook example)."""
    fit = linear_regression([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert fit.slope == pytest.approx(0.6)
    assert fit.intercept == pytest.approx(2.2)
    assert fit.r_squared == pytest.approx(0.6)


def test_linear_regression_constant_y() -> None:
    """Constant y: slope 0 and r² 1 (the line explains all of the zero variance)."""
    fit = linear_regression([1, 2, 3], [4, 4, 4])
    assert (fit.slope, fit.intercept, fit.r_squared) == pytest.approx((0, 4, 1))


@pytest.mark.parametrize(
    ("xs", "ys", "match"),
    [([1], [1], "two points"), ([1, 2], [1], "same length"), ([3, 3], [1, 2], "equal"),
     ([1, float("nan")], [1, 2], "finite")],
)  # fmt: skip
def test_linear_regression_refuses_bad_input(xs: list[float], ys: list[float], match: str) -> None:
    """Too few points, mismatched lengths, a vertical line or NaN are ValueErrors."""
    with pytest.raises(ValueError, match=match):
        linear_regression(xs, ys)


@settings(deadline=None)
@given(
    st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=30, unique=True),
    st.floats(min_value=-100, max_value=100),
    st.floats(min_value=-100, max_value=100),
)
def test_linear_regression_recovers_exact_lines(xs: list[float], a: float, b: float) -> None:
    """Property: points exactly on y = a x + b are fitted with slope a and intercept b."""
    if max(xs) - min(xs) < 1e-3:
        return  # too close to vertical for a stable fit; covered by the refusal test
    fit = linear_regression(xs, [a * x + b for x in xs])
    assert fit.slope == pytest.approx(a, abs=1e-6)
    assert fit.intercept == pytest.approx(b, abs=1e-4)
    assert 0.0 <= fit.r_squared <= 1.0


# --- generate_heatmap ------------------------------------------------------------------------


def _grid(cells: list[HeatmapCell], rows: int, cols: int) -> list[list[float]]:
    return [[cells[r * cols + c].value for c in range(cols)] for r in range(rows)]


def test_heatmap_bins_points_north_up() -> None:
    """Row 0 is north, column 0 west; the max edges fall into the last cells."""
    points = [
        (10.0, 0.0, 1.0),
        (0.0, 10.0, 2.0),
        (0.0, 0.0, 4.0),
        (9.0, 1.0, 8.0),
        (5.0, 5.0, 16.0),
    ]
    cells = generate_heatmap(points, 2, 2)
    # bbox lat 0..10, lon 0..10; (5, 5) sits on the midlines -> south-east cell
    assert _grid(cells, 2, 2) == [[9.0, 0.0], [4.0, 18.0]]
    nw = cells[0]
    assert (nw.row, nw.col, nw.count) == (0, 0, 2)
    assert (nw.lat_min, nw.lat_max, nw.lon_min, nw.lon_max) == (5.0, 10.0, 0.0, 5.0)
    assert nw.as_dict()["value"] == 9.0


@pytest.mark.parametrize(("reduce", "expected"), [("sum", 9.0), ("mean", 4.5), ("count", 2.0)])
def test_heatmap_reducers(reduce: str, expected: float) -> None:
    """sum, mean and count reduce each cell; empty cells are 0 with count 0."""
    points = [(1.5, 0.5, 1.0), (1.5, 0.5, 8.0)]  # both inside the north-west cell
    cells = generate_heatmap(points, 2, 2, reduce=reduce, bounds=(0.0, 2.0, 0.0, 2.0))
    assert [c.value for c in cells] == [expected, 0.0, 0.0, 0.0]
    assert [c.count for c in cells] == [2, 0, 0, 0]


def test_heatmap_with_bounds_skips_outside_points_and_empty_input() -> None:
    """Points outside explicit bounds are ignored; no points still gives the full grid."""
    cells = generate_heatmap([(50.0, 50.0, 1.0), (0.5, 0.5, 3.0)], 1, 1, bounds=(0, 1, 0, 1))
    assert [(c.value, c.count) for c in cells] == [(3.0, 1)]
    empty = generate_heatmap([], 3, 4)
    assert len(empty) == 12 and all(c.count == 0 and c.value == 0 for c in empty)
    assert [(c.row, c.col) for c in empty[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": 0, "cols": 1}, "grid"),
        ({"rows": 1, "cols": 1, "reduce": "max"}, "reduce"),
        ({"rows": 1, "cols": 1, "bounds": (5.0, 0.0, 0.0, 5.0)}, "bounds"),
        ({"rows": 1, "cols": 1, "points": [(float("nan"), 0.0, 1.0)]}, "finite"),
    ],
)
def test_heatmap_refuses_bad_input(kwargs: dict[str, object], match: str) -> None:
    """Bad grid sizes, reducers, inverted bounds and non-finite points are ValueErrors."""
    points = kwargs.pop("points", [(0.0, 0.0, 1.0)])
    with pytest.raises(ValueError, match=match):
        generate_heatmap(points, **kwargs)  # type: ignore[arg-type]


@settings(deadline=None)
@given(
    st.lists(st.tuples(finite, finite, st.floats(min_value=0, max_value=1e6)), max_size=50),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=6),
)
def test_heatmap_conserves_points_and_totals(
    points: list[tuple[float, float, float]], rows: int, cols: int
) -> None:
    """Property: every point lands in exactly one cell, so counts and sums are conserved."""
    cells = generate_heatmap(points, rows, cols)
    assert len(cells) == rows * cols
    assert sum(c.count for c in cells) == len(points)
    assert math.fsum(c.value for c in cells) == pytest.approx(
        math.fsum(p[2] for p in points), rel=1e-9, abs=1e-6
    )

"""Reduce the accumulators of one bucket to the value a query asks for.

``dispatch_count`` is 1 per event (so its sum and count are the number of dispatches and every
other aggregation is 1.0); ``sla_compliance`` is 1.0/0.0 per event, so its percentiles are exact
from the met/not-met counts; ``response_time`` and ``distance_km`` use exact count/sum/min/max
and the sketches for percentiles (ARCHITECTURE.md, "Dashboard metrics").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.dashboard._buckets import Accumulator
from services.dashboard._sketch import merged_quantiles, series_quantiles
from services.dashboard.models import METRICS, AggregationType

__all__ = ["QUANTILES", "check_metric", "reduce_accumulators", "reduce_series"]

QUANTILES = {
    AggregationType.PERCENTILE_50: 0.50,
    AggregationType.PERCENTILE_90: 0.90,
    AggregationType.PERCENTILE_95: 0.95,
    AggregationType.PERCENTILE_99: 0.99,
}


def check_metric(metric_name: str) -> None:
    """Raise ``ValueError`` (a ``ValidationError`` at the caller) for an unknown metric name."""
    if metric_name not in METRICS:
        raise ValueError(f"metric_name: must be one of {', '.join(METRICS)}, got {metric_name!r}")


def _binary_quantile(n: int, ones: int, q: float) -> float:
    """Type-7 quantile of ``n - ones`` zeros followed by ``ones`` ones, exactly."""
    rank = (n - 1) * q
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    zeros = n - ones
    v_lo = 0.0 if lo < zeros else 1.0
    v_hi = 0.0 if hi < zeros else 1.0
    return v_lo + (v_hi - v_lo) * (rank - lo)


def reduce_accumulators(
    accs: Sequence[Accumulator], metric: str, aggregation: AggregationType
) -> tuple[float, int]:
    """``(value, sample_count)`` of ``metric`` over ``accs`` (which must hold samples)."""
    n = sum(a.count for a in accs)
    if aggregation is AggregationType.COUNT:
        return float(n), n
    if metric == "dispatch_count":
        return (float(n) if aggregation is AggregationType.SUM else 1.0), n
    if metric == "sla_compliance":
        met = sum(a.met for a in accs)
        if aggregation is AggregationType.SUM:
            value = float(met)
        elif aggregation is AggregationType.AVERAGE:
            value = met / n
        elif aggregation is AggregationType.MIN:
            value = 1.0 if met == n else 0.0
        elif aggregation is AggregationType.MAX:
            value = 1.0 if met else 0.0
        else:
            value = _binary_quantile(n, met, QUANTILES[aggregation])
        return value, n
    rt = metric == "response_time"
    if aggregation is AggregationType.SUM:
        return math.fsum(a.rt_sum if rt else a.d_sum for a in accs), n
    if aggregation is AggregationType.AVERAGE:
        return math.fsum(a.rt_sum if rt else a.d_sum for a in accs) / n, n
    if aggregation is AggregationType.MIN:
        return min(a.rt_min if rt else a.d_min for a in accs), n
    if aggregation is AggregationType.MAX:
        return max(a.rt_max if rt else a.d_max for a in accs), n
    sketches = [a.rt if rt else a.dist for a in accs]
    return _within_range(merged_quantiles(sketches, [QUANTILES[aggregation]])[0], accs, rt), n


def _within_range(value: float, accs: Sequence[Accumulator], rt: bool) -> float:
    """A sketch's estimate clamped to the exact min..max (a bin's representative can sit just
    outside it)."""
    lo = min(a.rt_min if rt else a.d_min for a in accs)
    hi = max(a.rt_max if rt else a.d_max for a in accs)
    return min(max(value, lo), hi)


def reduce_series(
    series: Sequence[Sequence[Accumulator]], metric: str, aggregation: AggregationType
) -> list[tuple[float, int]]:
    """``reduce_accumulators`` of every entry of a series (each must hold samples).

    Percentiles of response time and distance are computed for the whole series at once
    (``series_quantiles``); everything else is cheap per entry.
    """
    q = QUANTILES.get(aggregation)
    if q is None or metric not in ("response_time", "distance_km") or len(series) < 2:
        return [reduce_accumulators(accs, metric, aggregation) for accs in series]
    rt = metric == "response_time"
    values = series_quantiles([[a.rt if rt else a.dist for a in accs] for accs in series], q)
    return [
        (_within_range(value, accs, rt), sum(a.count for a in accs))
        for accs, value in zip(series, values, strict=True)
    ]

"""Trend lines, forecasts and anomalies over an aggregator's buckets.

Each metric is read as its natural per-bucket series: ``response_time`` and ``distance_km`` as
averages, ``dispatch_count`` as counts, ``sla_compliance`` as rates.

Trend: ordinary least squares over the last ``lookback_periods`` buckets with samples, ``x`` in
hours since the first bucket, so ``slope`` is per hour. Dead band: the trend is ``stable`` when
``|slope|`` is below ``STABLE_BAND`` (2 %) of ``|mean|`` per hour (or exactly 0 for a zero
mean). ``forecast_next_hour`` is the line one hour after the last bucket's start. ``confidence``
is ``r_squared * min(1, (n - 2) / 8)``: a line through two points explains them perfectly and
proves nothing, and ten or more points earn full weight.

Anomalies: each bucket is compared with the mean and (population) standard deviation of the
``BASELINE_BUCKETS`` buckets before it (at least ``MIN_BASELINE``); ``|z| > sensitivity`` is
flagged with the reason spelled out. A flat baseline (stddev 0) flags any different value.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ionveil.errors import ValidationError
from ionveil.statistics import linear_regression, mean, stddev
from services.dashboard._reduce import check_metric
from services.dashboard._validate import to_utc
from services.dashboard.models import AggregationType, TimeWindow, TrendAnalysis, TrendPoint

if TYPE_CHECKING:
    from services.dashboard.aggregator import DispatchAggregator
    from services.dashboard.models import AggregatedMetric

__all__ = [
    "BASELINE_BUCKETS",
    "MIN_BASELINE",
    "SERIES_AGGREGATION",
    "STABLE_BAND",
    "TrendAnalyzer",
]

STABLE_BAND = 0.02
_WINDOW_PROBLEM = f"window: must be one of {[t.value for t in TimeWindow]}"
BASELINE_BUCKETS = 10
MIN_BASELINE = 3
SERIES_AGGREGATION = {
    "response_time": AggregationType.AVERAGE,
    "distance_km": AggregationType.AVERAGE,
    "dispatch_count": AggregationType.COUNT,
    "sla_compliance": AggregationType.AVERAGE,
}


class TrendAnalyzer:
    """Analyzes metric trends and generates forecasts."""

    def __init__(self, aggregator: DispatchAggregator) -> None:
        """
        Initialize with an aggregator for data access.

        Args:
            aggregator: The aggregator to query for historical data.
        """
        self.aggregator = aggregator

    async def _series(
        self, org_id: str, metric_name: str, window: TimeWindow, periods: int
    ) -> list[AggregatedMetric]:
        try:
            check_metric(metric_name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        try:
            window = TimeWindow(window)
        except ValueError:
            raise ValidationError(
                f"window: must be one of {[t.value for t in TimeWindow]}"
            ) from None
        agg = self.aggregator
        now = agg.now()
        w = window.seconds
        end = math.floor(now / w) * w + w
        start = max(end - periods * w, now - agg.retention_s)
        return await agg.get_metric(
            org_id,
            metric_name,
            window,
            SERIES_AGGREGATION[metric_name],
            start=to_utc(start),
            end=to_utc(end),
        )

    async def analyze_trend(
        self,
        org_id: str,
        metric_name: str,
        window: TimeWindow,
        lookback_periods: int = 24,
    ) -> TrendAnalysis:
        """
        Analyze the trend of a metric over time.

        Args:
            org_id: Organisation to analyze.
            metric_name: Metric to analyze.
            window: Time window granularity.
            lookback_periods: Number of periods to analyze.

        Returns:
            TrendAnalysis with direction, slope, and forecast.

        Raises:
            ValidationError: unknown metric or window, or ``lookback_periods`` < 2.
        """
        if (
            isinstance(lookback_periods, bool)
            or not isinstance(lookback_periods, int)
            or (lookback_periods < 2)
        ):
            raise ValidationError(
                f"lookback_periods: must be an integer >= 2, got {lookback_periods!r}"
            )
        series = await self._series(org_id, metric_name, window, lookback_periods)
        points = [TrendPoint(m.window_start, m.value) for m in series]
        if len(points) < 2:
            last = points[-1].value if points else 0.0
            return TrendAnalysis(metric_name, points, "stable", 0.0, last, 0.0)
        t0 = points[0].timestamp
        xs = [(p.timestamp - t0).total_seconds() / 3600.0 for p in points]
        ys = [p.value for p in points]
        fit = linear_regression(xs, ys)
        level = abs(mean(ys))
        if (level == 0.0 and fit.slope == 0.0) or (
            level > 0.0 and abs(fit.slope) < STABLE_BAND * level
        ):
            direction = "stable"
        else:
            direction = "increasing" if fit.slope > 0 else "decreasing"
        confidence = fit.r_squared * min(1.0, (fit.n - 2) / 8.0)
        return TrendAnalysis(
            metric_name,
            points,
            direction,
            fit.slope,
            fit.predict(xs[-1] + 1.0),
            max(0.0, min(1.0, confidence)),
        )

    async def detect_anomalies(
        self,
        org_id: str,
        metric_name: str,
        window: TimeWindow,
        sensitivity: float = 2.0,
    ) -> list[dict[str, Any]]:
        """
        Detect anomalies in metric values.

        Args:
            org_id: Organisation to analyze.
            metric_name: Metric to check.
            window: Time window for analysis.
            sensitivity: Standard deviation multiplier for anomaly threshold.

        Returns:
            List of detected anomalies with timestamps and values: ``{timestamp, window_end,
            metric_name, value, sample_count, baseline_mean, baseline_stddev, z_score,
            direction ("spike"/"drop"), reason}``, oldest first.

        Raises:
            ValidationError: unknown metric or window, or a non-positive sensitivity.
        """
        if (
            isinstance(sensitivity, bool)
            or not isinstance(sensitivity, int | float)
            or not (math.isfinite(sensitivity) and sensitivity > 0)
        ):
            raise ValidationError(f"sensitivity: must be a finite number > 0, got {sensitivity!r}")
        try:
            window = TimeWindow(window)
        except ValueError:
            raise ValidationError(
                f"window: must be one of {[t.value for t in TimeWindow]}"
            ) from None
        periods = int(self.aggregator.retention_s // window.seconds) + 1
        series = await self._series(org_id, metric_name, window, periods)
        out = []
        for i in range(MIN_BASELINE, len(series)):
            base = [m.value for m in series[max(0, i - BASELINE_BUCKETS) : i]]
            mu, sd = mean(base), stddev(base)
            cur = series[i]
            if sd == 0.0:
                if cur.value == mu:
                    continue
                z = math.copysign(math.inf, cur.value - mu)
            else:
                z = (cur.value - mu) / sd
                if abs(z) <= sensitivity:
                    continue
            side = "above" if z > 0 else "below"
            how = (
                "differs from a constant"
                if math.isinf(z)
                else f"is {abs(z):.2f} standard deviations {side}"
            )
            out.append(
                {
                    "timestamp": cur.window_start,
                    "window_end": cur.window_end,
                    "metric_name": metric_name,
                    "value": cur.value,
                    "sample_count": cur.sample_count,
                    "baseline_mean": mu,
                    "baseline_stddev": sd,
                    "z_score": z if math.isfinite(z) else None,
                    "direction": "spike" if z > 0 else "drop",
                    "reason": (
                        f"{metric_name} {SERIES_AGGREGATION[metric_name].value} "
                        f"{cur.value:.4g} {how} the mean {mu:.4g} of the previous "
                        f"{len(base)} buckets (threshold {sensitivity:g})"
                    ),
                }
            )
        return out

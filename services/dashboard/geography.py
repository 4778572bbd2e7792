"""Regional summaries and heatmaps of an aggregator's data.

Regional summaries come from the exact bucket aggregates (1-minute buckets whose start lies in
``[floor(start), end)``, merged per region; the p90 from the sketches). Heatmaps bin the events
that carry ``metadata`` ``lat``/``lon`` with ``ionveil.statistics.generate_heatmap`` (row 0 =
north) over the bounding box of the points, drawn from a bounded per-org reservoir of the most
recent geo-tagged events within retention (``reservoir_size`` in the aggregator), so memory
stays bounded; events without coordinates are counted (``get_coverage``), not binned.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ionveil.errors import ValidationError
from ionveil.statistics import generate_heatmap
from services.dashboard._reduce import check_metric, reduce_accumulators
from services.dashboard._validate import parse_time
from services.dashboard.models import AggregationType

if TYPE_CHECKING:
    from services.dashboard.aggregator import DispatchAggregator

__all__ = ["GeographicBreakdown"]

_WINDOWS_DESC = (86400, 21600, 3600, 900, 300, 60)
_HEAT_REDUCE = {
    "response_time": "mean",
    "distance_km": "mean",
    "dispatch_count": "count",
    "sla_compliance": "mean",
}


class GeographicBreakdown:
    """Compute geographic breakdowns of dispatch metrics."""

    def __init__(self, aggregator: DispatchAggregator) -> None:
        """
        Initialize with an aggregator for data access.

        Args:
            aggregator: The aggregator to query.
        """
        self.aggregator = aggregator

    async def get_regional_summary(
        self,
        org_id: str,
        start: datetime,
        end: datetime,
    ) -> dict[str, dict[str, float]]:
        """
        Get dispatch metrics broken down by region.

        Each region maps to ``dispatch_count``, ``avg_response``, ``p90_response``,
        ``sla_compliance`` (rate 0..1) and ``avg_distance_km``.

        Args:
            org_id: Organisation to query.
            start: Query start time.
            end: Query end time.

        Returns:
            Dict mapping region to metric dict.
            Example: {"north": {"dispatch_count": 45, "avg_response": 8.2}}

        Raises:
            ValidationError: bad times or ``start >= end``.
        """
        try:
            lo, hi = parse_time(start, "start"), parse_time(end, "end")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if lo >= hi:
            raise ValidationError("start: must be before end")
        agg = self.aggregator
        agg.flush()
        state = agg.org_state(org_id)
        if state is None:
            return {}
        # The coarsest window whose buckets tile [start, end) exactly is the cheapest to merge.
        w = (
            next(w for w in _WINDOWS_DESC if lo % w == 0 and hi % w == 0)
            if (lo % 60 == 0 and hi % 60 == 0)
            else 60
        )
        first = math.floor(lo / w) * w
        by_region: dict[str, list[int]] = {}
        for cid, (region, _, _) in enumerate(state.store.combo_list):
            by_region.setdefault(region, []).append(cid)
        out: dict[str, dict[str, float]] = {}
        buckets = state.store.windows[w]
        starts = [b for b in buckets if first <= b < hi]
        for region, cids in sorted(by_region.items()):
            accs = [buckets[b][c] for b in starts for c in cids if c in buckets[b]]
            if not accs:
                continue
            n, _ = reduce_accumulators(accs, "dispatch_count", AggregationType.COUNT)
            out[region] = {
                "dispatch_count": n,
                "avg_response": reduce_accumulators(accs, "response_time", AggregationType.AVERAGE)[
                    0
                ],
                "p90_response": reduce_accumulators(
                    accs, "response_time", AggregationType.PERCENTILE_90
                )[0],
                "sla_compliance": reduce_accumulators(
                    accs, "sla_compliance", AggregationType.AVERAGE
                )[0],
                "avg_distance_km": reduce_accumulators(
                    accs, "distance_km", AggregationType.AVERAGE
                )[0],
            }
        return out

    async def get_heatmap_data(
        self,
        org_id: str,
        metric_name: str,
        grid_size: tuple[int, int] = (10, 10),
    ) -> list[dict[str, Any]]:
        """
        Get heatmap-ready data for geographic visualization.

        Values per cell: the mean of ``response_time``/``distance_km``/``sla_compliance``, or
        the number of dispatches for ``dispatch_count``; every cell also carries ``count`` and
        its bounds (``HeatmapCell.as_dict``). No geo-tagged events: an empty list.

        Args:
            org_id: Organisation to query.
            metric_name: Metric to aggregate.
            grid_size: (rows, cols) for the heatmap grid.

        Returns:
            List of {row, col, value} dicts for heatmap rendering.

        Raises:
            ValidationError: unknown metric or a grid outside 1..200 x 1..200.
        """
        try:
            check_metric(metric_name)
            rows, cols = (int(x) for x in grid_size)
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"grid_size/metric_name: {exc}") from None
        if not (1 <= rows <= 200 and 1 <= cols <= 200):
            raise ValidationError(f"grid_size: rows and cols must be 1..200, got {grid_size!r}")
        agg = self.aggregator
        agg.flush()
        state = agg.org_state(org_id)
        if state is None:
            return []
        cutoff = agg.now() - agg.retention_s
        col = {"response_time": 3, "distance_km": 4, "dispatch_count": None, "sla_compliance": 5}[
            metric_name
        ]
        kept = state.points.columns()
        kept = kept[:, kept[0] >= cutoff]
        values = np.ones(kept.shape[1]) if col is None else kept[col]
        points = list(zip(kept[1].tolist(), kept[2].tolist(), values.tolist(), strict=True))
        if not points:
            return []
        cells = generate_heatmap(points, rows, cols, reduce=_HEAT_REDUCE[metric_name])
        return [c.as_dict() for c in cells]

    def get_coverage(self, org_id: str) -> dict[str, int]:
        """How many accepted events had coordinates (in the reservoir now) and how many not."""
        state = self.aggregator.org_state(org_id)
        if state is None:
            return {"with_coordinates": 0, "without_coordinates": 0}
        return {
            "with_coordinates": len(state.points),
            "without_coordinates": int(state.stats["without_coordinates"]),
        }

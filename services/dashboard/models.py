"""The dashboard contract's value types (seed Task 2), plus the metric and dimension names.

``DispatchEvent`` is frozen (the seed's "frozen dataclasses for immutable event data"); the
other types are results handed to callers. Metric names, dimensions and bucket alignment are
fixed in ARCHITECTURE.md, "Dashboard metrics".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "AggregatedMetric",
    "AggregationType",
    "DashboardSnapshot",
    "DispatchEvent",
    "TimeWindow",
    "TrendAnalysis",
    "TrendPoint",
]

METRICS: tuple[str, ...] = ("response_time", "distance_km", "dispatch_count", "sla_compliance")
"""Every metric name the aggregator answers for."""

DIMENSIONS: tuple[str, ...] = ("region", "severity", "unit_type")
"""Dimensions a query may filter on (any subset)."""


class TimeWindow(str, Enum):
    """Bucket length; buckets are aligned to UTC multiples of it."""

    MINUTE_1 = "1m"
    MINUTE_5 = "5m"
    MINUTE_15 = "15m"
    HOUR_1 = "1h"
    HOUR_6 = "6h"
    DAY_1 = "1d"

    @property
    def seconds(self) -> int:
        """The window's length in seconds."""
        return _WINDOW_SECONDS[self.value]


_WINDOW_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}


class AggregationType(str, Enum):
    """How the samples of one bucket are reduced to a value."""

    SUM = "sum"
    COUNT = "count"
    AVERAGE = "avg"
    PERCENTILE_50 = "p50"
    PERCENTILE_90 = "p90"
    PERCENTILE_95 = "p95"
    PERCENTILE_99 = "p99"
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True)
class DispatchEvent:
    """A single dispatch event for analytics."""

    event_id: str
    org_id: str
    dispatch_id: str
    timestamp: datetime
    severity: int  # 1-5
    response_time_minutes: float
    distance_km: float
    region: str
    unit_type: str
    sla_met: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class AggregatedMetric:
    """A single aggregated metric value."""

    metric_name: str
    value: float
    window_start: datetime
    window_end: datetime
    dimensions: dict[str, str]  # e.g., {"region": "north", "severity": "5"}
    sample_count: int


@dataclass
class DashboardSnapshot:
    """Complete dashboard state at a point in time."""

    org_id: str
    timestamp: datetime
    metrics: list[AggregatedMetric]
    active_dispatches: int
    pending_dispatches: int
    sla_compliance_rate: float
    average_response_time: float
    alerts: list[dict[str, Any]]


@dataclass
class TrendPoint:
    """A single point in a trend line."""

    timestamp: datetime
    value: float


@dataclass
class TrendAnalysis:
    """Trend analysis result with direction and forecast."""

    metric_name: str
    points: list[TrendPoint]
    trend_direction: str  # "increasing", "decreasing", "stable"
    slope: float
    forecast_next_hour: float
    confidence: float  # 0.0 - 1.0

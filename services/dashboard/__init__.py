"""IonVeil dispatch analytics dashboard backend (seed Task 2).

Aggregates dispatch events per org into aligned time buckets (exact count/sum/min/max/avg,
sketch percentiles), tracks active/pending dispatches and open alerts, and answers trend,
anomaly and geographic queries; ``checkpoint`` persists the aggregates in the analytics
database. ``workers/dashboard.py`` binds it to NATS.
"""

from services.dashboard.aggregator import DispatchAggregator
from services.dashboard.checkpoint import (
    CheckpointStore,
    MemoryCheckpointStore,
    PostgresCheckpointStore,
)
from services.dashboard.geography import GeographicBreakdown
from services.dashboard.models import (
    DIMENSIONS,
    METRICS,
    AggregatedMetric,
    AggregationType,
    DashboardSnapshot,
    DispatchEvent,
    TimeWindow,
    TrendAnalysis,
    TrendPoint,
)
from services.dashboard.trends import TrendAnalyzer

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "AggregatedMetric",
    "AggregationType",
    "CheckpointStore",
    "DashboardSnapshot",
    "DispatchAggregator",
    "DispatchEvent",
    "GeographicBreakdown",
    "MemoryCheckpointStore",
    "PostgresCheckpointStore",
    "TimeWindow",
    "TrendAnalysis",
    "TrendAnalyzer",
    "TrendPoint",
]

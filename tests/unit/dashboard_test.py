"""The dashboard aggregator (seed Task 2) without servers: ingestion, every aggregation type,
time windows, dimension filters, sketch accuracy (property test), retention, duplicates,
snapshots, subscriptions, trends and anomalies with known answers, geography, checkpoints."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionveil.errors import ValidationError
from ionveil.statistics import generate_heatmap, percentile
from services.dashboard import (
    AggregationType,
    DispatchAggregator,
    DispatchEvent,
    GeographicBreakdown,
    MemoryCheckpointStore,
    TimeWindow,
    TrendAnalyzer,
)
from services.dashboard._sketch import LogSketch
from services.dashboard._validate import stable_hashes
from services.dashboard.checkpoint import restore_checkpoint, save_checkpoint

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock (epoch seconds)."""

    def __init__(self, at: datetime = NOW) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t


def ev(
    i: int,
    at: datetime,
    *,
    rt: float = 10.0,
    dist: float = 2.0,
    region: str = "north",
    sev: int = 3,
    unit: str = "ambulance",
    met: bool = True,
    org: str = "o1",
    meta: dict[str, Any] | None = None,
) -> DispatchEvent:
    return DispatchEvent(f"e{i}", org, f"d{i}", at, sev, rt, dist, region, unit, met, meta or {})


@pytest.fixture
async def agg() -> Any:
    a = DispatchAggregator(clock=Clock())
    yield a
    await a.aclose()


async def test_ingest_and_basic_aggregations(agg: DispatchAggregator) -> None:
    """Count, sum, avg, min, max of response time over one bucket are exact."""
    values = [3.0, 5.0, 7.5, 12.0]
    for i, v in enumerate(values):
        await agg.ingest_event(ev(i, NOW - timedelta(minutes=5), rt=v))
    expect = {
        AggregationType.COUNT: 4,
        AggregationType.SUM: 27.5,
        AggregationType.AVERAGE: 6.875,
        AggregationType.MIN: 3.0,
        AggregationType.MAX: 12.0,
    }
    for agg_type, want in expect.items():
        [m] = await agg.get_metric("o1", "response_time", TimeWindow.HOUR_1, agg_type)
        assert m.value == pytest.approx(want) and m.sample_count == 4


@pytest.mark.parametrize(
    ("agg_type", "pct"),
    [
        (AggregationType.PERCENTILE_50, 50),
        (AggregationType.PERCENTILE_90, 90),
        (AggregationType.PERCENTILE_95, 95),
        (AggregationType.PERCENTILE_99, 99),
    ],
)
async def test_percentiles_within_one_percent(
    agg: DispatchAggregator, agg_type: AggregationType, pct: int
) -> None:
    """Each percentile aggregation is within 1 % of the exact reference."""
    values = [0.5 + (i * 7919 % 1000) / 10 for i in range(1000)]
    await agg.ingest_batch([ev(i, NOW - timedelta(minutes=30), rt=v) for i, v in enumerate(values)])
    [m] = await agg.get_metric("o1", "response_time", TimeWindow.DAY_1, agg_type)
    assert m.value == pytest.approx(percentile(values, pct), rel=0.01)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=0.0, max_value=1e6, allow_subnormal=False), min_size=1, max_size=300
    ),
    pct=st.sampled_from([0.0, 1.0, 25.0, 50.0, 90.0, 95.0, 99.0, 100.0]),
    split=st.integers(min_value=0, max_value=300),
)
def test_sketch_property_relative_error(values: list[float], pct: float, split: int) -> None:
    """Merged sketches agree with ``ionveil.statistics.percentile`` within 1 %."""
    a, b = LogSketch(), LogSketch()
    for v in values[:split]:
        a.add(v)
    for v in values[split:]:
        b.add(v)
    a.merge(b)
    exact = percentile(values, pct)
    assert a.quantile(pct / 100) == pytest.approx(exact, rel=0.01, abs=1e-12)


def test_sketch_wire_round_trip_and_errors() -> None:
    """A sketch survives serialisation; empty sketches and bad quantiles raise."""
    s = LogSketch()
    for v in (1.0, 2.0, 0.0):
        s.add(v)
    again = LogSketch.from_wire(s.to_wire())
    assert again.bins == s.bins and again.count == 3
    assert again.copy().quantile(0.0) == 0.0
    with pytest.raises(ValueError, match="empty"):
        LogSketch().quantile(0.5)
    with pytest.raises(ValueError, match="within"):
        s.quantile(1.5)


@pytest.mark.parametrize("window", list(TimeWindow))
async def test_buckets_align_to_utc_multiples(agg: DispatchAggregator, window: TimeWindow) -> None:
    """Every window's buckets start at UTC multiples of its length, by event time."""
    at = NOW - timedelta(minutes=17, seconds=13)
    await agg.ingest_event(ev(1, at))
    rows = await agg.get_metric(
        "o1", "dispatch_count", window, AggregationType.COUNT, start=NOW - timedelta(days=2)
    )
    [m] = rows
    w = window.seconds
    assert m.window_start.timestamp() % w == 0
    assert m.window_start <= at < m.window_end
    assert (m.window_end - m.window_start).total_seconds() == w


async def test_one_metric_per_bucket_in_range(agg: DispatchAggregator) -> None:
    """get_metric returns one value per 1-minute bucket with samples, oldest first, in range."""
    for i in range(5):
        await agg.ingest_event(ev(i, NOW - timedelta(minutes=10 - 2 * i)))
    rows = await agg.get_metric(
        "o1",
        "dispatch_count",
        TimeWindow.MINUTE_1,
        AggregationType.COUNT,
        start=NOW - timedelta(minutes=8),
        end=NOW - timedelta(minutes=3),
    )
    assert [r.window_start for r in rows] == [NOW - timedelta(minutes=m) for m in (8, 6, 4)]
    assert (
        await agg.get_metric("nobody", "dispatch_count", TimeWindow.MINUTE_1, AggregationType.COUNT)
        == []
    )


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        (None, 8),
        ({"region": "north"}, 4),
        ({"severity": "5"}, 4),
        ({"severity": 5}, 4),
        ({"unit_type": "engine"}, 4),
        ({"region": "north", "severity": "5"}, 2),
        ({"region": "north", "severity": "5", "unit_type": "engine"}, 1),
        ({"region": "nowhere"}, 0),
    ],
)
async def test_dimension_filters(
    agg: DispatchAggregator, dims: dict[str, Any] | None, expected: int
) -> None:
    """Any subset of region, severity and unit_type filters exactly."""
    i = 0
    for region in ("north", "south"):
        for sev in (5, 1):
            for unit in ("engine", "ambulance"):
                await agg.ingest_event(
                    ev(i, NOW - timedelta(minutes=1), region=region, sev=sev, unit=unit)
                )
                i += 1
    rows = await agg.get_metric(
        "o1", "response_time", TimeWindow.HOUR_1, AggregationType.COUNT, dims
    )
    assert sum(r.sample_count for r in rows) == expected
    if rows and dims:
        assert rows[0].dimensions == {k: str(v) for k, v in dims.items()}


@pytest.mark.parametrize(
    ("agg_type", "want"),
    [
        (AggregationType.AVERAGE, 0.75),
        (AggregationType.SUM, 3.0),
        (AggregationType.MIN, 0.0),
        (AggregationType.MAX, 1.0),
        (AggregationType.PERCENTILE_50, 1.0),
        (AggregationType.PERCENTILE_99, 1.0),
        (AggregationType.COUNT, 4.0),
    ],
)
async def test_sla_compliance_is_exact(
    agg: DispatchAggregator, agg_type: AggregationType, want: float
) -> None:
    """sla_compliance aggregates 1.0/0.0 per event exactly, percentiles included."""
    for i, met in enumerate((True, True, False, True)):
        await agg.ingest_event(ev(i, NOW - timedelta(minutes=1), met=met))
    [m] = await agg.get_metric("o1", "sla_compliance", TimeWindow.HOUR_1, agg_type)
    assert m.value == pytest.approx(want)
    assert m.value == pytest.approx(percentile([1, 1, 0, 1], 50)) or agg_type is not (
        AggregationType.PERCENTILE_50
    )


@pytest.mark.parametrize(
    ("agg_type", "want"),
    [
        (AggregationType.SUM, 3.0),
        (AggregationType.COUNT, 3.0),
        (AggregationType.AVERAGE, 1.0),
        (AggregationType.PERCENTILE_90, 1.0),
    ],
)
async def test_dispatch_count_is_one_per_event(
    agg: DispatchAggregator, agg_type: AggregationType, want: float
) -> None:
    """dispatch_count is 1 per event: sum and count are the number of dispatches."""
    await agg.ingest_batch([ev(i, NOW - timedelta(minutes=1)) for i in range(3)])
    [m] = await agg.get_metric("o1", "dispatch_count", TimeWindow.MINUTE_5, agg_type)
    assert m.value == want


async def test_distance_metric(agg: DispatchAggregator) -> None:
    """distance_km aggregates the distance field."""
    await agg.ingest_batch(
        [ev(i, NOW - timedelta(minutes=1), dist=d) for i, d in enumerate((1.0, 3.0))]
    )
    [m] = await agg.get_metric("o1", "distance_km", TimeWindow.MINUTE_15, AggregationType.MAX)
    assert m.value == 3.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"metric_name": "bogus"}, "metric_name"),
        ({"window": "2m"}, "window"),
        ({"aggregation": "median"}, "aggregation"),
        ({"dimensions": {"colour": "red"}}, "colour"),
        ({"start": NOW, "end": NOW - timedelta(hours=1)}, "start"),
        ({"dimensions": {"region": 1.5}}, "region"),
    ],
)
async def test_bad_queries_name_the_field(
    agg: DispatchAggregator, kwargs: dict[str, Any], field: str
) -> None:
    """A bad query raises ValidationError naming the field."""
    args = {
        "org_id": "o1",
        "metric_name": "response_time",
        "window": TimeWindow.HOUR_1,
        "aggregation": AggregationType.AVERAGE,
        **kwargs,
    }
    with pytest.raises(ValidationError, match=field):
        await agg.get_metric(**args)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"severity": 0}, "severity"),
        ({"severity": True}, "severity"),
        ({"response_time_minutes": -1.0}, "response_time_minutes"),
        ({"distance_km": math.inf}, "distance_km"),
        ({"region": ""}, "region"),
        ({"org_id": "a.b"}, "org_id"),
        ({"event_id": "x" * 200}, "event_id"),
        ({"timestamp": datetime(2026, 3, 2)}, "timezone"),
        ({"sla_met": 1}, "sla_met"),
        ({"metadata": {"lat": 95, "lon": 0}}, "lat"),
    ],
)
async def test_invalid_events_are_refused_naming_the_field(
    agg: DispatchAggregator, change: dict[str, Any], field: str
) -> None:
    """ingest_event raises for a broken rule; ingest_batch skips and counts it."""
    fields = {**ev(1, NOW).__dict__, **change}
    bad = DispatchEvent(**fields)
    with pytest.raises(ValidationError, match=field):
        await agg.ingest_event(bad)
    assert await agg.ingest_batch([bad, ev(2, NOW)]) == 1
    assert agg.get_ingest_stats()["rejected_invalid"] == 2


async def test_retention_and_future_skew_reject_and_count(agg: DispatchAggregator) -> None:
    """Events older than retention or > 5 min ahead are rejected and counted, per org too."""
    await agg.ingest_event(ev(0, NOW))
    with pytest.raises(ValidationError, match="retention"):
        await agg.ingest_event(ev(1, NOW - timedelta(hours=25)))
    with pytest.raises(ValidationError, match="future"):
        await agg.ingest_event(ev(2, NOW + timedelta(minutes=6)))
    assert await agg.ingest_batch([ev(3, NOW + timedelta(minutes=4))]) == 1
    stats = agg.get_ingest_stats("o1")
    assert (stats["rejected_too_old"], stats["rejected_future"]) == (1, 1)
    snap = await agg.get_dashboard_snapshot("o1")
    rejected = {
        m.dimensions["reason"]: m.value for m in snap.metrics if m.metric_name == "rejected_events"
    }
    assert rejected == {"too_old": 1.0, "future": 1.0, "invalid": 0.0}


async def test_old_buckets_are_evicted() -> None:
    """After retention passes, buckets and seen ids are dropped (memory stays bounded)."""
    clock = Clock()
    agg = DispatchAggregator(retention_hours=1, clock=clock)
    await agg.ingest_event(ev(1, NOW - timedelta(minutes=30)))
    agg.flush()
    clock.t += 2 * 86400
    agg.flush()
    state = agg.org_state("o1")
    assert state is not None
    assert all(not b for b in state.store.windows.values()) and not state.store.seen
    await agg.aclose()


async def test_duplicate_event_ids_count_once(agg: DispatchAggregator) -> None:
    """The same event id within retention is counted once, across flushes and batches."""
    e = ev(1, NOW - timedelta(minutes=2))
    await agg.ingest_batch([e, e])
    agg.flush()
    await agg.ingest_event(e)
    [m] = await agg.get_metric("o1", "dispatch_count", TimeWindow.HOUR_1, AggregationType.COUNT)
    assert m.sample_count == 1
    assert agg.get_ingest_stats()["duplicates"] == 2


def test_stable_hash_ignores_batch_padding() -> None:
    """An id hashes the same whatever the longest id of its batch."""
    alone = stable_hashes(["abc"])[0]
    assert stable_hashes(["abc", "a-much-longer-id"])[0] == alone
    assert stable_hashes(["abd"])[0] != alone


async def test_buffer_flush_and_thread_safety() -> None:
    """Ingest buffers; flush() (from other threads too) folds everything exactly once."""
    agg = DispatchAggregator(clock=Clock(), max_buffer=1_000_000)
    await agg.ingest_batch([ev(i, NOW - timedelta(minutes=1)) for i in range(500)])
    assert agg.get_buffer_size() == 500
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(agg.flush())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 500 and agg.get_buffer_size() == 0
    assert agg.flush() == 0
    await agg.aclose()


async def test_background_flush_runs_on_its_interval() -> None:
    """The lazily started flush task empties the buffer every flush_interval_seconds."""
    agg = DispatchAggregator(clock=Clock(), flush_interval_seconds=0.05)
    await agg.ingest_event(ev(1, NOW))
    for _ in range(100):
        if agg.get_buffer_size() == 0:
            break
        await asyncio.sleep(0.02)
    assert agg.get_buffer_size() == 0
    await agg.aclose()


async def test_ingest_records_fast_path_and_fallback(agg: DispatchAggregator) -> None:
    """Wire maps validate column-wise; a bad record falls back and is named by index."""

    def rec(i: int, **kw: Any) -> dict[str, Any]:
        return {
            "event_id": f"r{i}",
            "org_id": "o1",
            "dispatch_id": f"d{i}",
            "timestamp": (NOW - timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "severity": 2,
            "response_time_minutes": 4,
            "distance_km": 1.5,
            "region": "west",
            "unit_type": "engine",
            "sla_met": False,
            **kw,
        }

    accepted, rejected = await agg.ingest_records([rec(i) for i in range(10)])
    assert (accepted, rejected) == (10, [])
    accepted, rejected = await agg.ingest_records(
        [rec(20), rec(21, severity="high"), "junk", rec(23, timestamp=NOW.timestamp() - 5)]
    )
    assert accepted == 2
    assert [i for i, _ in rejected] == [1, 2] and "severity" in rejected[0][1]
    rows = await agg.get_metric(
        "o1",
        "dispatch_count",
        TimeWindow.HOUR_1,
        AggregationType.COUNT,
        end=NOW + timedelta(minutes=1),
    )
    assert sum(m.sample_count for m in rows) == 12


async def test_snapshot_covers_last_hour_incidents_and_alerts(agg: DispatchAggregator) -> None:
    """Snapshot: last-hour compliance/avg, pending/active from incidents, open alerts."""
    await agg.ingest_event(ev(1, NOW - timedelta(minutes=90), rt=100.0, met=False))
    await agg.ingest_batch(
        [
            ev(2, NOW - timedelta(minutes=10), rt=4.0, met=True),
            ev(3, NOW - timedelta(minutes=5), rt=8.0, met=False),
        ]
    )
    t = NOW.isoformat()
    await agg.ingest_incident("o1", {"incident_id": "i1", "status": "opened", "timestamp": t})
    await agg.ingest_incident("o1", {"incident_id": "i2", "status": "dispatched", "timestamp": t})
    assert not await agg.ingest_incident(
        "o1", {"incident_id": "i2", "status": "opened", "timestamp": NOW.timestamp() - 60}
    )
    await agg.ingest_alert("o1", {"alert_id": "a1", "status": "opened", "severity": "warning"})
    await agg.ingest_alert("o1", {"alert_id": "a2", "status": "opened", "severity": "emergency"})
    await agg.ingest_alert("o1", {"alert_id": "a3", "status": "opened", "severity": "info"})
    await agg.ingest_alert("o1", {"alert_id": "a3", "status": "resolved", "severity": "info"})
    snap = await agg.get_dashboard_snapshot("o1")
    assert snap.sla_compliance_rate == 0.5 and snap.average_response_time == 6.0
    assert (snap.pending_dispatches, snap.active_dispatches) == (1, 1)
    assert [a["alert_id"] for a in snap.alerts] == ["a2", "a1"]
    names = {m.metric_name for m in snap.metrics}
    assert {
        "response_time",
        "dispatch_count",
        "sla_compliance",
        "rejected_events",
        "duplicate_events",
        "events_without_coordinates",
    } <= names
    empty = await agg.get_dashboard_snapshot("nobody")
    assert empty.metrics == [] and empty.sla_compliance_rate == 0.0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": "opened", "timestamp": 0}, "incident_id"),
        ({"incident_id": "i", "status": "lost", "timestamp": 0}, "status"),
        ({"incident_id": "i", "status": "opened", "timestamp": "yesterday"}, "timestamp"),
    ],
)
async def test_bad_incidents_and_alerts(
    agg: DispatchAggregator, payload: dict[str, Any], field: str
) -> None:
    """Bad lifecycle events and alerts raise ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        await agg.ingest_incident("o1", payload)
    with pytest.raises(ValidationError, match="alert_id"):
        await agg.ingest_alert("o1", {"status": "opened"})
    with pytest.raises(ValidationError, match="org_id"):
        await agg.ingest_alert("bad org", {"alert_id": "a", "status": "opened"})


async def test_subscription_yields_updates_and_ends_cleanly(agg: DispatchAggregator) -> None:
    """Subscribers get metric updates after a flush and stop cleanly with aclose()."""
    updates = agg.subscribe_to_updates("o1", ["dispatch_count", "active_dispatches"])
    pending = asyncio.ensure_future(anext(updates))
    await asyncio.sleep(0)
    await agg.ingest_batch([ev(i, NOW - timedelta(minutes=1)) for i in range(3)])
    agg.flush()
    first = await asyncio.wait_for(pending, 5)
    assert (first.metric_name, first.value, first.sample_count) == ("dispatch_count", 3.0, 3)
    await agg.ingest_incident(
        "o1", {"incident_id": "i", "status": "dispatched", "timestamp": NOW.isoformat()}
    )
    second = await asyncio.wait_for(anext(updates), 5)
    assert second.metric_name == "active_dispatches" and second.value == 1
    await updates.aclose()
    assert not agg._hub.wanted("o1")


async def test_slow_subscriber_is_told_about_dropped_updates() -> None:
    """A full subscriber queue drops the oldest and yields an updates_dropped marker."""
    agg = DispatchAggregator(clock=Clock(), update_queue_size=2)
    updates = agg.subscribe_to_updates("o1", ["dispatch_count"])
    pending = asyncio.ensure_future(anext(updates))
    await asyncio.sleep(0)
    for minute in range(1, 6):  # five flushes, five updates; the reader is not reading
        await agg.ingest_event(ev(minute, NOW - timedelta(minutes=minute)))
        agg.flush()
    marker = await asyncio.wait_for(pending, 5)
    assert marker.metric_name == "updates_dropped" and marker.value == 3
    kept = [await asyncio.wait_for(anext(updates), 5) for _ in range(2)]
    assert [m.window_start for m in kept] == [NOW - timedelta(minutes=m) for m in (4, 5)]
    await updates.aclose()
    await agg.aclose()


async def test_listener_errors_do_not_stop_flush(agg: DispatchAggregator) -> None:
    """A failing update listener is logged; other listeners still get the update."""
    seen: list[str] = []

    def broken(org: str, metric: Any) -> None:
        raise RuntimeError("boom")

    agg.add_update_listener(broken)
    agg.add_update_listener(lambda org, m: seen.append(m.metric_name))
    await agg.ingest_event(ev(1, NOW))
    agg.flush()
    assert "response_time" in seen
    agg.remove_update_listener(broken)


@pytest.mark.parametrize(
    ("slope", "direction"), [(2.0, "increasing"), (-2.0, "decreasing"), (0.01, "stable")]
)
async def test_trend_on_known_line(agg: DispatchAggregator, slope: float, direction: str) -> None:
    """A series on a known line gives its slope per hour, direction and forecast."""
    for h in range(12):  # hourly buckets, value 20 + slope * h
        await agg.ingest_event(ev(h, NOW - timedelta(hours=11 - h, minutes=-1), rt=30 + slope * h))
    trend = await TrendAnalyzer(agg).analyze_trend("o1", "response_time", TimeWindow.HOUR_1, 12)
    assert trend.slope == pytest.approx(slope)
    assert trend.trend_direction == direction
    assert trend.forecast_next_hour == pytest.approx(30 + slope * 12)
    assert trend.confidence == pytest.approx(1.0) and len(trend.points) == 12


async def test_trend_edge_cases(agg: DispatchAggregator) -> None:
    """No data is stable with zero confidence; two points earn no confidence; bad input."""
    analyzer = TrendAnalyzer(agg)
    empty = await analyzer.analyze_trend("o1", "dispatch_count", TimeWindow.MINUTE_5)
    assert (empty.trend_direction, empty.confidence, empty.points) == ("stable", 0.0, [])
    await agg.ingest_event(ev(1, NOW - timedelta(minutes=6)))
    await agg.ingest_event(ev(2, NOW - timedelta(minutes=1)))
    two = await analyzer.analyze_trend("o1", "dispatch_count", TimeWindow.MINUTE_5, 4)
    assert two.confidence == 0.0 and two.trend_direction == "stable"
    with pytest.raises(ValidationError, match="lookback_periods"):
        await analyzer.analyze_trend("o1", "dispatch_count", TimeWindow.MINUTE_5, 1)
    with pytest.raises(ValidationError, match="window"):
        await analyzer.analyze_trend("o1", "dispatch_count", "7m")  # type: ignore[arg-type]


async def test_anomalies_flag_known_spike(agg: DispatchAggregator) -> None:
    """A spike far outside the rolling baseline is flagged with a reason; the rest is not."""
    base = [10.0, 11.0, 9.0, 10.0, 11.0, 9.0, 10.0, 11.0, 9.0, 10.0]
    series = [*base, 40.0, 10.0]
    for i, v in enumerate(series):
        await agg.ingest_event(ev(i, NOW - timedelta(minutes=len(series) - i), rt=v))
    found = await TrendAnalyzer(agg).detect_anomalies(
        "o1", "response_time", TimeWindow.MINUTE_1, 3.0
    )
    assert len(found) == 1
    [a] = found
    assert a["value"] == 40.0 and a["direction"] == "spike" and a["z_score"] > 3
    assert "standard deviations above" in a["reason"]
    assert a["timestamp"] == NOW - timedelta(minutes=2)


async def test_anomalies_on_flat_baseline_and_bad_sensitivity(agg: DispatchAggregator) -> None:
    """A flat baseline flags any different value; sensitivity must be positive."""
    for i, v in enumerate([5.0, 5.0, 5.0, 5.0, 1.0]):
        await agg.ingest_event(ev(i, NOW - timedelta(minutes=6 - i), rt=v))
    [a] = await TrendAnalyzer(agg).detect_anomalies("o1", "response_time", TimeWindow.MINUTE_1)
    assert a["direction"] == "drop" and a["z_score"] is None and "constant" in a["reason"]
    with pytest.raises(ValidationError, match="sensitivity"):
        await TrendAnalyzer(agg).detect_anomalies("o1", "response_time", TimeWindow.MINUTE_1, 0)


async def test_regional_summary(agg: DispatchAggregator) -> None:
    """Per region: count, avg and p90 response, compliance, avg distance."""
    await agg.ingest_batch(
        [
            ev(1, NOW - timedelta(minutes=20), rt=5.0, region="north", met=True),
            ev(2, NOW - timedelta(minutes=20), rt=15.0, region="north", met=False),
            ev(3, NOW - timedelta(minutes=10), rt=8.0, region="south", dist=7.0),
        ]
    )
    geo = GeographicBreakdown(agg)
    summary = await geo.get_regional_summary("o1", NOW - timedelta(hours=1), NOW)
    assert summary["north"]["dispatch_count"] == 2
    assert summary["north"]["avg_response"] == 10.0
    assert summary["north"]["sla_compliance"] == 0.5
    assert summary["north"]["p90_response"] == pytest.approx(percentile([5.0, 15.0], 90), rel=0.01)
    assert summary["south"]["avg_distance_km"] == 7.0
    odd = await geo.get_regional_summary("o1", NOW - timedelta(minutes=30, seconds=7), NOW)
    assert odd["south"]["dispatch_count"] == 1
    assert await geo.get_regional_summary("none", NOW - timedelta(hours=1), NOW) == {}
    with pytest.raises(ValidationError, match="before"):
        await geo.get_regional_summary("o1", NOW, NOW)


@pytest.mark.parametrize(
    ("metric", "reduce"),
    [("dispatch_count", "count"), ("response_time", "mean"), ("sla_compliance", "mean")],
)
async def test_heatmap_follows_generate_heatmap(
    agg: DispatchAggregator, metric: str, reduce: str
) -> None:
    """Geo-tagged events bin exactly as generate_heatmap; others are counted, not binned."""
    coords = [(51.0 + i * 0.013 % 0.5, -0.2 + i * 0.029 % 0.4) for i in range(40)]
    events = [
        ev(
            i,
            NOW - timedelta(minutes=1),
            rt=float(i + 1),
            met=i % 3 == 0,
            meta={"lat": lat, "lon": lon},
        )
        for i, (lat, lon) in enumerate(coords)
    ]
    events.append(ev(99, NOW - timedelta(minutes=1)))
    await agg.ingest_batch(events)
    geo = GeographicBreakdown(agg)
    cells = await geo.get_heatmap_data("o1", metric, (3, 4))
    value = {
        "dispatch_count": lambda e: 1.0,
        "response_time": lambda e: e.response_time_minutes,
        "sla_compliance": lambda e: float(e.sla_met),
    }[metric]
    want = generate_heatmap(
        [(e.metadata["lat"], e.metadata["lon"], value(e)) for e in events[:40]], 3, 4, reduce=reduce
    )
    assert cells == [c.as_dict() for c in want]
    assert geo.get_coverage("o1") == {"with_coordinates": 40, "without_coordinates": 1}
    assert await geo.get_heatmap_data("none", metric) == []
    with pytest.raises(ValidationError, match="grid_size"):
        await geo.get_heatmap_data("o1", metric, (0, 3))


async def test_checkpoint_round_trip_restores_everything(agg: DispatchAggregator) -> None:
    """export/import via a checkpoint store restores aggregates, seen ids and incidents."""
    await agg.ingest_batch(
        [
            ev(i, NOW - timedelta(minutes=i), rt=float(i), meta={"lat": 1.0, "lon": 2.0})
            for i in range(50)
        ]
    )
    await agg.ingest_incident(
        "o1", {"incident_id": "i", "status": "opened", "timestamp": NOW.isoformat()}
    )
    await agg.ingest_alert("o1", {"alert_id": "a", "status": "opened"})
    store = MemoryCheckpointStore()
    assert await save_checkpoint(agg, store, {"DISPATCH": 7}) == 1
    other = DispatchAggregator(clock=Clock())
    assert await restore_checkpoint(other, store) == {"DISPATCH": 7}
    assert (
        await restore_checkpoint(DispatchAggregator(clock=Clock()), MemoryCheckpointStore()) == {}
    )
    for agg_type in AggregationType:
        assert await other.get_metric(
            "o1", "response_time", TimeWindow.MINUTE_5, agg_type, {"region": "north"}
        ) == await agg.get_metric(
            "o1", "response_time", TimeWindow.MINUTE_5, agg_type, {"region": "north"}
        )
    assert await other.ingest_batch([ev(3, NOW - timedelta(minutes=3), rt=3.0)]) == 1
    other.flush()
    assert other.get_ingest_stats("o1")["duplicates"] == 1
    snap = await other.get_dashboard_snapshot("o1")
    assert snap.pending_dispatches == 1 and len(snap.alerts) == 1
    assert other.org_ids() == ["o1"]
    await other.aclose()


@pytest.mark.parametrize(
    "kwargs", [{"retention_hours": 0}, {"flush_interval_seconds": -1}, {"max_buffer": 0}]
)
def test_constructor_validates(kwargs: dict[str, Any]) -> None:
    """Non-positive settings are refused with a ValidationError."""
    with pytest.raises(ValidationError):
        DispatchAggregator(**kwargs)


async def test_multiple_orgs_are_kept_apart(agg: DispatchAggregator) -> None:
    """Events of different orgs in one buffer aggregate separately (no query crosses orgs)."""
    await agg.ingest_batch(
        [ev(i, NOW - timedelta(minutes=1), org=f"org{i % 3}") for i in range(30)]
    )
    for org in ("org0", "org1", "org2"):
        [m] = await agg.get_metric(org, "dispatch_count", TimeWindow.HOUR_1, AggregationType.COUNT)
        assert m.sample_count == 10
    with pytest.raises(ValidationError, match="org_id"):
        await agg.get_dashboard_snapshot("")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"metadata": {"lat": math.nan, "lon": 1.0}}, "lat"),
        ({"timestamp": "2026-03-02T11:59:xxZ"}, "timestamp"),
        ({"metadata": "here"}, "metadata"),
    ],
)
async def test_fast_path_falls_back_for_odd_records(
    agg: DispatchAggregator, change: dict[str, Any], why: str
) -> None:
    """Odd timestamps or coordinates leave the column fast path and are named per record."""
    good = {
        "event_id": "g1",
        "org_id": "o1",
        "dispatch_id": "d",
        "severity": 1,
        "timestamp": "2026-03-02T11:59:30Z",
        "response_time_minutes": 1.0,
        "distance_km": 1.0,
        "region": "r",
        "unit_type": "u",
        "sla_met": True,
        "metadata": {"lat": 10.0, "lon": 10},
    }
    assert await agg.ingest_records([good]) == (1, [])
    assert await agg.ingest_records([{**good, "event_id": "g2"}]) == (1, [])
    accepted, rejected = await agg.ingest_records([{**good, "event_id": "g3", **change}])
    assert accepted == 0 and why in rejected[0][1]

"""IonVeil Dispatch Analytics Dashboard Backend (seed Task 2).

Real-time aggregation for operational dashboards: dispatch performance, resource use and SLA
compliance per org, in aligned UTC time buckets (1m ... 1d) by event time, filterable by any
subset of region, severity and unit_type.

How ingest stays fast: ``ingest_*`` only validates and appends to a pending buffer (guarded by
a ``threading.Lock``, as ``flush()`` is sync and may run on another thread); ``flush()`` folds
the whole buffer with numpy (``_buckets.OrgStore.fold``), de-duplicating event ids first. A
flush runs every ``flush_interval_seconds`` (a background task started lazily), whenever the
buffer reaches ``max_buffer`` events, and before every query, so answers always include every
accepted event.

Extras beyond the contract (all documented on the methods): ``ingest_records`` (the worker's
columnar wire path), ``ingest_incident``, ``ingest_alert``, ``get_ingest_stats``,
``export_state``/``import_state`` (checkpoints), ``add_update_listener``, ``aclose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgpack
import numpy as np
import structlog

from ionveil.errors import ValidationError
from services.dashboard import _validate as v
from services.dashboard._buckets import ALL, Accumulator, FoldColumns, OrgStore
from services.dashboard._reduce import check_metric, reduce_accumulators, reduce_series
from services.dashboard._reservoir import Reservoir
from services.dashboard._updates import UpdateHub, UpdateListener
from services.dashboard._wire import WireEvent, as_record
from services.dashboard.geography import GeographicBreakdown
from services.dashboard.incidents import AlertBook, IncidentTracker
from services.dashboard.models import (
    DIMENSIONS,
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
    "AggregatedMetric",
    "AggregationType",
    "DashboardSnapshot",
    "DispatchAggregator",
    "DispatchEvent",
    "GeographicBreakdown",
    "TimeWindow",
    "TrendAnalysis",
    "TrendAnalyzer",
    "TrendPoint",
]

log = structlog.get_logger(__name__)

FUTURE_SKEW_S = 300.0
"""Events more than 5 minutes ahead of the clock are rejected (ARCHITECTURE.md, "Security")."""
LIVE_METRICS = {
    "response_time": AggregationType.AVERAGE,
    "distance_km": AggregationType.AVERAGE,
    "dispatch_count": AggregationType.COUNT,
    "sla_compliance": AggregationType.AVERAGE,
}
"""What a live update carries per metric (for the 1-minute bucket an event landed in)."""


_dt = v.to_utc


class OrgState:
    """Everything the aggregator keeps for one org."""

    def __init__(self, reservoir_size: int) -> None:
        self.store = OrgStore()
        self.incidents = IncidentTracker()
        self.alerts = AlertBook()
        self.points = Reservoir(reservoir_size)
        self.stats: Counter[str] = Counter()


class DispatchAggregator:
    """
    Aggregates dispatch events into dashboard-ready metrics.

    Maintains sliding window aggregations and supports real-time
    updates via event streaming.
    """

    def __init__(
        self,
        retention_hours: int = 24,
        flush_interval_seconds: float = 10.0,
        *,
        clock: Callable[[], float] = time.time,
        max_buffer: int = 65_536,
        reservoir_size: int = 100_000,
        update_queue_size: int = 1000,
    ) -> None:
        """
        Initialize the aggregator.

        Args:
            retention_hours: How long to retain aggregated data.
            flush_interval_seconds: How often to flush partial aggregates.
            clock: Epoch-seconds clock (injectable for tests and simulations).
            max_buffer: Pending events that trigger an immediate flush (large folds are
                cheaper per event: most of a fold's cost is per distinct bucket and sketch bin).
            reservoir_size: Most recent geo-tagged events kept per org for heatmaps.
            update_queue_size: Live updates queued per subscriber before the oldest drop.

        Raises:
            ValidationError: a non-positive retention, interval or size.
        """
        problems = []
        if (
            isinstance(retention_hours, bool)
            or not isinstance(retention_hours, int | float)
            or (not retention_hours > 0)
        ):
            problems.append(f"retention_hours: must be > 0, got {retention_hours!r}")
        if not (isinstance(flush_interval_seconds, int | float) and flush_interval_seconds > 0):
            problems.append(f"flush_interval_seconds: must be > 0, got {flush_interval_seconds!r}")
        if max_buffer < 1 or reservoir_size < 1 or update_queue_size < 1:
            problems.append("max_buffer, reservoir_size, update_queue_size: must be >= 1")
        if problems:
            raise ValidationError(problems)
        self.retention_hours = retention_hours
        self.flush_interval_seconds = float(flush_interval_seconds)
        self.retention_s = float(retention_hours) * 3600.0
        self.max_buffer = max_buffer
        self._clock = clock
        self._reservoir_size = reservoir_size
        self._lock = threading.Lock()  # the pending buffer
        self._state_lock = threading.RLock()  # the org states (folds vs. queries)
        self._buf: list[tuple[v.Columns, np.ndarray]] = []  # (columns, combination gids)
        self._buffered = 0
        self._orgs: dict[str, OrgState] = {}
        self._gids: dict[tuple[str, str, int, str], int] = {}
        self._gid_org: list[str] = []
        self._gid_cid: list[int] = []
        self._stats: Counter[str] = Counter()
        self._hub = UpdateHub(update_queue_size)
        self._flusher: asyncio.Task[None] | None = None
        self._last_evict = 0.0

    # ------------------------------------------------------------------ ingest

    async def ingest_event(self, event: DispatchEvent) -> None:
        """
        Ingest a single dispatch event for aggregation.

        Args:
            event: The dispatch event to process.

        Raises:
            ValidationError: the event breaks a rule, or is older than retention or more than
                five minutes in the future (it is counted in ``get_ingest_stats`` either way).
        """
        cols, bad = v.event_columns([event])
        if bad:
            self._stats["rejected_invalid"] += 1
            raise ValidationError(bad[0][1])
        rejected = self._append(cols)
        if rejected:
            raise ValidationError(rejected[0][1])

    async def ingest_batch(self, events: list[DispatchEvent]) -> int:
        """
        Ingest multiple events in a batch.

        Invalid or out-of-retention events are skipped and counted (``get_ingest_stats``);
        duplicates of already aggregated ids are dropped at the next flush (also counted).

        Args:
            events: List of dispatch events.

        Returns:
            Number of events successfully ingested.
        """
        cols, bad = v.event_columns(events)
        if bad:
            self._stats["rejected_invalid"] += len(bad)
            log.warning("dashboard.invalid_events", count=len(bad), first=bad[0][1])
        return len(cols.eid) - len(self._append(cols))

    async def ingest_records(self, records: Sequence[Any]) -> tuple[int, list[tuple[int, str]]]:
        """Ingest wire records (decoded maps, or ``WireEvent`` structs): the worker's fast path.

        Returns:
            ``(accepted, rejected)`` where ``rejected`` lists ``(index, reason)`` for every
            record that was invalid or outside retention (each is also counted).
        """
        cols = v.fast_columns(records) if records else None
        if cols is not None:
            return len(cols.eid) - len(rejected := self._append(cols)), rejected
        records = [as_record(r) if type(r) is WireEvent else r for r in records]
        good: list[Any] = []
        index: list[int] = []
        rejected = []
        for i, record in enumerate(records):
            problems = v.record_problems(record)
            if problems:
                rejected.append((i, "; ".join(problems)))
            else:
                good.append(record)
                index.append(i)
        self._stats["rejected_invalid"] += len(rejected)
        if good:
            cols = v.fast_columns(good)
            assert cols is not None, "records that pass one by one pass as a batch"
            rejected += [(index[i], why) for i, why in self._append(cols)]
        return len(records) - len(rejected), sorted(rejected)

    def _append(self, cols: v.Columns) -> list[tuple[int, str]]:
        """Check combinations and time range, then buffer; returns ``(index, reason)`` skips."""
        if not len(cols):
            return []
        # map() over zip() reuses one key tuple, so no tuple per event is kept alive.
        gids = list(
            map(self._gids.get, zip(cols.org, cols.region, cols.sev, cols.unit, strict=True))
        )
        now = self._clock()
        lo, hi = now - self.retention_s, now + FUTURE_SKEW_S
        bad: list[tuple[int, str]] = []
        if None in gids or cols.ts.min() < lo or cols.ts.max() > hi:
            for i, (gid, ts) in enumerate(zip(gids, cols.ts.tolist(), strict=True)):
                if gid is None:
                    key = (cols.org[i], cols.region[i], cols.sev[i], cols.unit[i])
                    gid = self._gids.get(key)  # registered earlier in this batch?
                    if gid is None:
                        problems = v.dimension_problems(*key)
                        if problems:
                            bad.append((i, "; ".join(problems)))
                            self._stats["rejected_invalid"] += 1
                            continue
                        gid = self._register(key)
                    gids[i] = gid
                if ts < lo:
                    bad.append((i, "timestamp: older than the retention period"))
                    self._count_rejection(cols.org[i], "too_old")
                elif ts > hi:
                    bad.append((i, "timestamp: more than 5 minutes in the future"))
                    self._count_rejection(cols.org[i], "future")
            if bad:
                skip = {i for i, _ in bad}
                keep = [i for i in range(len(gids)) if i not in skip]
                cols = cols.take(keep)
                gids = [gids[i] for i in keep]
        if gids:
            chunk = (cols, np.array(gids, dtype=np.int64))
            with self._lock:
                self._buf.append(chunk)
                self._buffered += len(gids)
                size = self._buffered
            if size >= self.max_buffer:
                self.flush()
            self._ensure_flusher()
        return bad

    def _register(self, key: tuple[str, str, int, str]) -> int:
        org, region, sev, unit = key
        with self._state_lock:
            gid = self._gids.get(key)
            if gid is None:
                state = self._org(org)
                gid = len(self._gid_org)
                self._gid_org.append(org)
                self._gid_cid.append(state.store.combo_id((region, str(sev), unit)))
                self._gids[key] = gid
        return gid

    def _org(self, org_id: str) -> OrgState:
        state = self._orgs.get(org_id)
        if state is None:
            state = self._orgs[org_id] = OrgState(self._reservoir_size)
        return state

    def _count_rejection(self, org_id: str, reason: str) -> None:
        self._stats[f"rejected_{reason}"] += 1
        state = self._orgs.get(org_id)
        if state is not None:
            state.stats[f"rejected_{reason}"] += 1

    # ------------------------------------------------------------------ flush

    def get_buffer_size(self) -> int:
        """Return the current size of the event buffer."""
        with self._lock:
            return self._buffered

    def flush(self) -> int:
        """
        Manually flush pending aggregations.

        Returns:
            Number of aggregations flushed (events folded into the buckets, duplicates
            excluded).
        """
        with self._lock:
            chunks, self._buf, self._buffered = self._buf, [], 0
        with self._state_lock:
            folded = self._fold(chunks) if chunks else 0
            now = self._clock()
            if now - self._last_evict >= 10.0:
                self._evict(now - self.retention_s)
                self._last_evict = now
        return folded

    def _fold(self, chunks: list[tuple[v.Columns, np.ndarray]]) -> int:
        gids = np.concatenate([g for _, g in chunks])
        parts = [c for c, _ in chunks]
        eids: list[str] = []
        for c in parts:
            eids += c.eid

        def column(name: str) -> np.ndarray:
            return np.concatenate([getattr(c, name) for c in parts])

        lat, lon = column("lat"), column("lon")
        org_of = np.array(self._gid_org_index(), dtype=np.int64)[gids]
        cols = FoldColumns(
            column("ts"),
            np.array(self._gid_cid, dtype=np.int64)[gids],
            column("rt"),
            column("dist"),
            column("met"),
            v.stable_hashes(eids),
        )
        orgs = list(dict.fromkeys(self._gid_org))
        folded = 0
        for oi in [0] if len(orgs) == 1 else np.unique(org_of).tolist():
            org_id = orgs[oi]
            state = self._orgs[org_id]
            rows = None if len(orgs) == 1 else np.flatnonzero(org_of == oi)
            part = cols if rows is None else cols.take(rows)
            kept, keep = state.store.dedupe(part)
            dropped = len(part.ts) - len(kept.ts)
            if dropped:
                state.stats["duplicates"] += dropped
                self._stats["duplicates"] += dropped
            touched = state.store.fold(kept)
            n = len(kept.ts)
            folded += n
            state.stats["accepted"] += n
            index = rows if keep is None else (np.flatnonzero(keep) if rows is None else rows[keep])
            self._add_points(state, kept, lat, lon, index)
            if touched and self._hub.wanted(org_id):
                self._hub.publish(org_id, self._live_updates(state, touched))
        self._stats["accepted"] += folded
        return folded

    def _gid_org_index(self) -> list[int]:
        order = {org: i for i, org in enumerate(dict.fromkeys(self._gid_org))}
        return [order[o] for o in self._gid_org]

    @staticmethod
    def _add_points(
        state: OrgState,
        kept: FoldColumns,
        lat: np.ndarray,
        lon: np.ndarray,
        index: np.ndarray | None,
    ) -> None:
        """Append the kept rows that carry coordinates to the org's heatmap reservoir."""
        if index is not None:
            lat, lon = lat[index], lon[index]
        has = ~np.isnan(lat)
        with_coords = int(has.sum())
        state.stats["without_coordinates"] += len(lat) - with_coords
        if not with_coords:
            return
        if with_coords < len(lat):
            sel = np.flatnonzero(has)
            ts, rt, dist, met = kept.ts[sel], kept.rt[sel], kept.dist[sel], kept.met[sel]
            lat, lon = lat[sel], lon[sel]
        else:
            ts, rt, dist, met = kept.ts, kept.rt, kept.dist, kept.met
        state.points.extend(ts, lat, lon, rt, dist, met)

    def _live_updates(self, state: OrgState, minutes: set[int]) -> list[AggregatedMetric]:
        buckets = state.store.windows[60]
        out = []
        for start in sorted(minutes):
            acc = buckets.get(start, {}).get(ALL)
            if acc is None:
                continue
            for metric, agg in LIVE_METRICS.items():
                value, n = reduce_accumulators([acc], metric, agg)
                out.append(AggregatedMetric(metric, value, _dt(start), _dt(start + 60), {}, n))
        return out

    def _evict(self, cutoff_s: float) -> None:
        for state in self._orgs.values():
            state.store.evict(cutoff_s)
            state.incidents.evict(cutoff_s)
            state.points.drop_older(cutoff_s)

    def _ensure_flusher(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flusher = loop.create_task(self._flush_loop(), name="dashboard-flush")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_seconds)
            try:
                self.flush()
            except Exception:  # logged, and the next interval tries again
                log.exception("dashboard.flush_failed")

    async def aclose(self) -> None:
        """Flush what is pending and stop the background flush task."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()

    # ------------------------------------------------------------------ queries

    def _query_state(self, org_id: str) -> OrgState | None:
        if not isinstance(org_id, str) or not org_id:
            raise ValidationError("org_id: must be a non-empty string")
        self.flush()
        return self._orgs.get(org_id)

    async def get_metric(
        self,
        org_id: str,
        metric_name: str,
        window: TimeWindow,
        aggregation: AggregationType,
        dimensions: dict[str, str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[AggregatedMetric]:
        """
        Query aggregated metrics.

        Returns one ``AggregatedMetric`` per aligned bucket that starts in
        ``[floor(start), end)`` and has samples, oldest first.

        Args:
            org_id: Organisation to query.
            metric_name: Name of the metric (e.g., "response_time", "dispatch_count").
            window: Time window for aggregation.
            aggregation: Type of aggregation to apply.
            dimensions: Optional dimension filters.
            start: Query start time (default: 1 hour ago).
            end: Query end time (default: now).

        Returns:
            List of aggregated metric values.

        Raises:
            ValidationError: an unknown metric, window, aggregation or dimension, or
                ``start >= end``.
        """
        window, aggregation, dims, lo, hi = self._check_query(
            metric_name, window, aggregation, dimensions, start, end
        )
        state = self._query_state(org_id)
        if state is None:
            return []
        with self._state_lock:
            return self._series(state, metric_name, window, aggregation, dims, lo, hi)

    def _check_query(
        self,
        metric_name: str,
        window: Any,
        aggregation: Any,
        dimensions: Mapping[str, Any] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> tuple[TimeWindow, AggregationType, dict[str, str], float, float]:
        problems = []
        try:
            check_metric(metric_name)
        except ValueError as exc:
            problems.append(str(exc))
        try:
            window = TimeWindow(window)
        except ValueError:
            problems.append(f"window: must be one of {[w.value for w in TimeWindow]}")
        try:
            aggregation = AggregationType(aggregation)
        except ValueError:
            problems.append(f"aggregation: must be one of {[a.value for a in AggregationType]}")
        dims: dict[str, str] = {}
        for key, value in (dimensions or {}).items():
            if key not in DIMENSIONS:
                problems.append(f"dimensions.{key}: unknown (use {', '.join(DIMENSIONS)})")
            elif isinstance(value, bool) or not isinstance(value, str | int):
                problems.append(f"dimensions.{key}: must be a string")
            else:
                dims[key] = str(value)
        now = self._clock()
        try:
            hi = now if end is None else v.parse_time(end, "end")
            lo = hi - 3600.0 if start is None else v.parse_time(start, "start")
        except ValueError as exc:
            problems.append(str(exc))
            lo = hi = 0.0
        if not problems and lo >= hi:
            problems.append("start: must be before end")
        if problems:
            raise ValidationError(problems)
        return window, aggregation, dims, lo, hi

    def _series(
        self,
        state: OrgState,
        metric: str,
        window: TimeWindow,
        aggregation: AggregationType,
        dims: dict[str, str],
        lo: float,
        hi: float,
    ) -> list[AggregatedMetric]:
        cids = self.matching_combos(state, dims)
        if not cids:
            return []
        w = window.seconds
        buckets = state.store.windows[w]
        first = math.floor(lo / w) * w
        starts: list[int] = []
        series: list[list[Accumulator]] = []
        for start in sorted(b for b in buckets if first <= b < hi):
            bucket = buckets[start]
            accs = [bucket[c] for c in cids if c in bucket]
            if accs:
                starts.append(start)
                series.append(accs)
        return [
            AggregatedMetric(metric, value, _dt(start), _dt(start + w), dict(dims), n)
            for start, (value, n) in zip(
                starts, reduce_series(series, metric, aggregation), strict=True
            )
        ]

    @staticmethod
    def matching_combos(state: OrgState, dims: Mapping[str, str]) -> list[int]:
        """Combination ids matching a filter (``[ALL]`` for no filter)."""
        if not dims:
            return [ALL]
        idx = [DIMENSIONS.index(k) for k in dims]
        want = [dims[k] for k in dims]
        return [
            cid
            for cid, combo in enumerate(state.store.combo_list)
            if all(combo[i] == w for i, w in zip(idx, want, strict=True))
        ]

    async def get_dashboard_snapshot(
        self,
        org_id: str,
    ) -> DashboardSnapshot:
        """
        Get a complete dashboard snapshot for an organization.

        Metrics cover the last hour (1-minute buckets, by event time): ``response_time``
        avg/p50/p90/p95/p99/min/max, ``distance_km`` avg, ``dispatch_count`` count,
        ``sla_compliance`` avg, then ingest counters since start as ``rejected_events``
        (dimension ``reason``: too_old, future, invalid), ``duplicate_events`` and
        ``events_without_coordinates``. With no events in the hour, compliance and average
        response are 0.0 (see the ``dispatch_count`` sample count).

        Args:
            org_id: Organisation to query.

        Returns:
            Complete dashboard state with all key metrics.
        """
        state = self._query_state(org_id)
        now = self._clock()
        now_dt = _dt(now)
        hour_ago = _dt(now - 3600.0)
        if state is None:
            return DashboardSnapshot(org_id, now_dt, [], 0, 0, 0.0, 0.0, [])
        with self._state_lock:
            buckets = state.store.windows[60]
            lo = math.floor((now - 3600.0) / 60) * 60
            accs = [b[ALL] for s, b in buckets.items() if lo <= s <= now and ALL in b]
            metrics = []
            if accs:
                for metric, agg in (
                    ("response_time", AggregationType.AVERAGE),
                    *(
                        ("response_time", a)
                        for a in (
                            AggregationType.PERCENTILE_50,
                            AggregationType.PERCENTILE_90,
                            AggregationType.PERCENTILE_95,
                            AggregationType.PERCENTILE_99,
                            AggregationType.MIN,
                            AggregationType.MAX,
                        )
                    ),
                    ("distance_km", AggregationType.AVERAGE),
                    ("dispatch_count", AggregationType.COUNT),
                    ("sla_compliance", AggregationType.AVERAGE),
                ):
                    value, n = reduce_accumulators(accs, metric, agg)
                    metrics.append(
                        AggregatedMetric(
                            metric, value, hour_ago, now_dt, {"aggregation": agg.value}, n
                        )
                    )
            since = _dt(now - self.retention_s)
            for reason in ("too_old", "future", "invalid"):
                n = state.stats[f"rejected_{reason}"]
                metrics.append(
                    AggregatedMetric(
                        "rejected_events", float(n), since, now_dt, {"reason": reason}, n
                    )
                )
            for name, key in (
                ("duplicate_events", "duplicates"),
                ("events_without_coordinates", "without_coordinates"),
            ):
                n = state.stats[key]
                metrics.append(AggregatedMetric(name, float(n), since, now_dt, {}, n))
            by_name = {(m.metric_name, m.dimensions.get("aggregation")): m for m in metrics}
            compliance = by_name.get(("sla_compliance", "avg"))
            response = by_name.get(("response_time", "avg"))
            return DashboardSnapshot(
                org_id=org_id,
                timestamp=now_dt,
                metrics=metrics,
                active_dispatches=state.incidents.active,
                pending_dispatches=state.incidents.pending,
                sla_compliance_rate=compliance.value if compliance else 0.0,
                average_response_time=response.value if response else 0.0,
                alerts=state.alerts.list(),
            )

    async def subscribe_to_updates(
        self,
        org_id: str,
        metrics: list[str],
    ) -> AsyncIterator[AggregatedMetric]:
        """
        Subscribe to real-time metric updates.

        Each flush yields, per touched 1-minute bucket, the metrics asked for (response_time
        and distance_km as averages, dispatch_count as a count, sla_compliance as a rate);
        ``active_dispatches``, ``pending_dispatches`` and ``open_alerts`` are yielded when
        incidents or alerts change. A subscriber that falls ``update_queue_size`` behind
        loses the oldest updates and then receives an ``updates_dropped`` metric whose value
        is how many. Stop with ``break`` or ``aclose()``.

        Args:
            org_id: Organisation to subscribe to.
            metrics: List of metric names to receive updates for.

        Yields:
            AggregatedMetric updates as they occur.
        """
        sub = self._hub.subscribe(org_id, metrics)
        self._ensure_flusher()
        try:
            while True:
                yield await sub.get()
        finally:
            self._hub.unsubscribe(sub)

    def add_update_listener(self, listener: UpdateListener) -> None:
        """Call ``listener(org_id, metric)`` synchronously for every update of every org."""
        self._hub.add_listener(listener)

    def remove_update_listener(self, listener: UpdateListener) -> None:
        """Stop calling a listener added with ``add_update_listener``."""
        self._hub.remove_listener(listener)

    # ------------------------------------------------------------------ incidents, alerts

    async def ingest_incident(self, org_id: str, payload: Mapping[str, Any]) -> bool:
        """Apply an incident lifecycle event (``{incident_id, priority, status, timestamp}``).

        Returns:
            Whether the pending/active state changed (stale out-of-order updates do not).

        Raises:
            ValidationError: a bad org id, incident id, status or timestamp.
        """
        state = self._checked_org(org_id)
        with self._state_lock:
            changed = state.incidents.apply(payload)
            pending, active = state.incidents.pending, state.incidents.active
        if changed and self._hub.wanted(org_id):
            now = _dt(self._clock())
            self._hub.publish(
                org_id,
                [
                    AggregatedMetric("active_dispatches", float(active), now, now, {}, active),
                    AggregatedMetric("pending_dispatches", float(pending), now, now, {}, pending),
                ],
            )
        return changed

    async def ingest_alert(self, org_id: str, alert: Mapping[str, Any]) -> bool:
        """Apply an alert state change (the whole alert, with ``alert_id`` and ``status``).

        Returns:
            Whether the org's set of open alerts changed.

        Raises:
            ValidationError: a bad org id, or an alert without ``alert_id``/``status``.
        """
        state = self._checked_org(org_id)
        with self._state_lock:
            changed = state.alerts.apply(alert)
            n = len(state.alerts.open)
        if changed and self._hub.wanted(org_id):
            now = _dt(self._clock())
            self._hub.publish(org_id, [AggregatedMetric("open_alerts", float(n), now, now, {}, n)])
        return changed

    def _checked_org(self, org_id: str) -> OrgState:
        problems = v.dimension_problems(org_id, "-", 1, "-")
        if problems:
            raise ValidationError(problems)
        with self._state_lock:
            return self._org(org_id)

    # ------------------------------------------------------------------ stats, state

    def get_ingest_stats(self, org_id: str | None = None) -> dict[str, int]:
        """Counters since start (or restore): ``accepted``, ``duplicates``,
        ``rejected_too_old``, ``rejected_future``, ``rejected_invalid``,
        ``without_coordinates`` and ``buffered``; for one org when ``org_id`` is given."""
        keys = (
            "accepted",
            "duplicates",
            "rejected_too_old",
            "rejected_future",
            "rejected_invalid",
            "without_coordinates",
        )
        if org_id is None:
            source = self._stats
        else:
            state = self._orgs.get(org_id)
            source = state.stats if state is not None else Counter()
        out = {k: int(source[k]) for k in keys}
        out["buffered"] = self.get_buffer_size()
        return out

    def org_ids(self) -> list[str]:
        """Orgs the aggregator holds state for."""
        return sorted(self._orgs)

    def org_state(self, org_id: str) -> OrgState | None:
        """The raw state of an org (for the trend and geography helpers)."""
        return self._orgs.get(org_id)

    def now(self) -> float:
        """The aggregator's clock, epoch seconds."""
        return self._clock()

    def export_state(self, org_id: str) -> bytes:
        """One org's aggregates, seen ids, incidents, alerts, points and counters, serialised
        (MessagePack) and compressed (zlib). Call ``flush()`` first for a consistent cut."""
        with self._state_lock:
            state = self._orgs[org_id]
            wire = {
                "v": 1,
                "store": state.store.to_wire(),
                "incidents": state.incidents.to_wire(),
                "alerts": list(state.alerts.open.values()),
                "points": state.points.rows(),
                "stats": dict(state.stats),
            }
        return zlib.compress(msgpack.packb(wire, use_bin_type=True), 1)

    def import_state(self, org_id: str, blob: bytes) -> None:
        """Replace an org's state with an ``export_state`` blob (used at restart)."""
        wire = msgpack.unpackb(zlib.decompress(blob), raw=False, strict_map_key=False)
        state = OrgState(self._reservoir_size)
        state.store = OrgStore.from_wire(wire["store"])
        state.incidents = IncidentTracker.from_wire(wire["incidents"])
        for alert in wire["alerts"]:
            state.alerts.apply(alert)
        state.points.extend_rows(wire["points"])
        state.stats.update(wire["stats"])
        with self._state_lock:
            self._orgs[org_id] = state
            for cid, (region, sev, unit) in enumerate(state.store.combo_list):
                key = (org_id, region, int(sev), unit)
                self._gids[key] = len(self._gid_org)
                self._gid_org.append(org_id)
                self._gid_cid.append(cid)

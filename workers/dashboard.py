"""The dashboard worker: ``services.dashboard`` bound to NATS, PostgreSQL and HTTP.

Bindings (ARCHITECTURE.md, "NATS contract"; subjects.yaml):

- consumes DISPATCH (a dispatch event or an array of them per message; an event whose
  ``org_id`` differs from the subject's ``<org>`` is refused), INCIDENTS and ALERTS; DISPATCH
  bodies are decoded straight into typed structs (``decode_dispatch``, msgspec) and handed to
  the aggregator's columnar path, the hot path of the ingest target;
- serves ``ionveil.api.dashboard.<org>.{snapshot,metric,trend,anomalies,regions,heatmap}``;
- publishes live updates on ``ionveil.dashboard.updates.<org>.<metric>`` (core NATS);
- serves the live page on ``/`` (port 8111) with Server-Sent Events (``workers.dashboard_web``).

Delivery and replicas (how "kill -9 mid-stream" stays exact): every replica reads every stream
in full through its own durable, ``dashboard-dispatch-<replica_id>`` (and ``-incidents-``,
``-alerts-``; deleted by the server after ``INACTIVE_THRESHOLD_S`` unused), so replicas hold the
same aggregates and answer the same. Messages are acked once ingested; the aggregates are
checkpointed with the highest stream sequence ingested per stream every
``checkpoint_interval_s`` and at drain. A (re)started replica restores the newest checkpoint and
its durables start at ``offset + 1``: what was acked but not yet checkpointed is replayed, and
the seen-id sets inside the checkpoint drop what the checkpoint already counted. Incidents and
alerts are replay-safe by construction (latest timestamp / latest state wins).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import structlog
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ionveil.errors import ValidationError
from services.dashboard import (
    AggregatedMetric,
    CheckpointStore,
    DispatchAggregator,
    GeographicBreakdown,
    PostgresCheckpointStore,
    TrendAnalyzer,
)
from services.dashboard._wire import WireEvent, dispatch_decoder
from services.dashboard.checkpoint import restore_checkpoint, save_checkpoint
from workers.codec import (
    MAX_PAYLOAD_BYTES,
    check_not_future,
    decode_payload,
    encode_payload,
    is_json_content,
    parse_timestamp,
)
from workers.dashboard_web import DashboardWeb
from workers.runtime import ConsumerSpec, EndpointSpec, Envelope, Request, Worker, WorkerContext

__all__ = ["INACTIVE_THRESHOLD_S", "DashboardWorker"]

log = structlog.get_logger(__name__)

UPDATES_SUBJECT = "ionveil.dashboard.updates.{org}.{metric}"
INACTIVE_THRESHOLD_S = 600.0
MAX_EVENTS_PER_MESSAGE = 10_000
_ORG_ID = itemgetter("org_id")
_ORG_ATTR = attrgetter("org_id")
_STREAMS = {  # stream -> (durable prefix, filter subject)
    "DISPATCH": ("dashboard-dispatch", "ionveil.dispatch.events.>"),
    "INCIDENTS": ("dashboard-incidents", "ionveil.incidents.>"),
    "ALERTS": ("dashboard-alerts", "ionveil.alerts.>"),
}


class DashboardWorker(Worker):
    """Aggregates dispatch events for dashboards; see the module docstring for delivery."""

    name = "dashboard"
    databases = ("analytics",)

    def __init__(
        self,
        *,
        aggregator: DispatchAggregator | None = None,
        store: CheckpointStore | None = None,
        checkpoint_interval_s: float = 30.0,
        flush_interval_s: float = 1.0,
        batch: int = 256,
    ) -> None:
        """Create the worker.

        Args:
            aggregator: the aggregator to feed (a fresh one by default).
            store: where checkpoints go (PostgreSQL in the analytics database by default).
            checkpoint_interval_s: seconds between checkpoints.
            flush_interval_s: the aggregator's flush (and live update) interval.
            batch: messages fetched per batch.
        """
        self.aggregator = aggregator or DispatchAggregator(flush_interval_seconds=flush_interval_s)
        self.trends = TrendAnalyzer(self.aggregator)
        self.geography = GeographicBreakdown(self.aggregator)
        self.checkpoint_interval_s = checkpoint_interval_s
        self.batch = batch
        self.offsets: dict[str, int] = dict.fromkeys(_STREAMS, 0)
        self.web = DashboardWeb(self)
        self._store = store
        self._ctx: WorkerContext | None = None
        self._updates: deque[tuple[str, AggregatedMetric]] = deque(maxlen=10_000)
        self._updates_ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def setup(self, ctx: WorkerContext) -> None:
        """Create the checkpoint schema, restore the newest checkpoint, hook live updates."""
        self._ctx = ctx
        if self._store is None:
            self._store = PostgresCheckpointStore(ctx.pools["analytics"])
        await self._store.setup()
        self.offsets.update(await restore_checkpoint(self.aggregator, self._store))
        self.aggregator.add_update_listener(self._on_update)
        ctx.metrics.registry.register(_IngestCollector(self.aggregator))
        log.info("dashboard.ready", replica_id=ctx.replica_id, offsets=self.offsets)

    def consumers(self) -> list[ConsumerSpec]:
        """One per-replica durable per input stream, starting after the checkpoint."""
        replica = self._ctx.replica_id if self._ctx is not None else "local"
        handlers = {
            "DISPATCH": self._on_dispatch,
            "INCIDENTS": self._on_incidents,
            "ALERTS": self._on_alerts,
        }
        return [
            ConsumerSpec(
                stream=stream,
                durable=f"{prefix}-{replica}",
                filter_subject=subject,
                handler=handlers[stream],
                batch=self.batch,
                start_seq=self.offsets[stream] + 1,
                inactive_threshold_s=INACTIVE_THRESHOLD_S,
                decoder=decode_dispatch if stream == "DISPATCH" else None,
            )
            for stream, (prefix, subject) in _STREAMS.items()
        ]

    def endpoints(self) -> list[EndpointSpec]:
        """The six query operations of ``ionveil.api.dashboard.<org>``."""
        ops: dict[str, Callable[[Request], Awaitable[Any]]] = {
            "snapshot": self._api_snapshot,
            "metric": self._api_metric,
            "trend": self._api_trend,
            "anomalies": self._api_anomalies,
            "regions": self._api_regions,
            "heatmap": self._api_heatmap,
        }
        return [
            EndpointSpec(name, f"ionveil.api.dashboard.*.{name}", handler)
            for name, handler in ops.items()
        ]

    def routes(self) -> list[web.RouteDef]:
        """The live page, its assets, its JSON reads and its event stream."""
        return self.web.routes()

    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """The checkpoint loop and the live-update publisher."""
        return [self._checkpoint_loop, self._publish_loop]

    async def teardown(self) -> None:
        """Final checkpoint at drain, then stop the aggregator's flush task."""
        self.aggregator.remove_update_listener(self._on_update)
        await self.checkpoint()
        await self.aggregator.aclose()
        self.web.close()

    async def checkpoint(self) -> int:
        """Checkpoint the aggregates with the offsets they cover; returns the generation."""
        assert self._store is not None, "setup() first"
        writer = self._ctx.replica_id if self._ctx is not None else ""
        return await save_checkpoint(self.aggregator, self._store, self.offsets, writer)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.checkpoint()
            except Exception:  # PostgreSQL away: logged, the next round tries again
                log.exception("dashboard.checkpoint_failed")

    # ------------------------------------------------------------------ consumers

    async def _on_dispatch(self, envelopes: list[Envelope]) -> None:
        records: list[Any] = []
        owners: list[int] = []
        for i, env in enumerate(envelopes):
            data = env.data
            if type(data) is list:
                if not data or len(data) > MAX_EVENTS_PER_MESSAGE:
                    env.reject(f"payload: an array of 1..{MAX_EVENTS_PER_MESSAGE} events")
                    continue
                items = data
            else:
                items = [data]
            org = env.org
            if not _all_of_org(items, org):
                items = [r for r in items if _org_of(r) == org]
                if not items:
                    env.reject(f"org_id: must match the subject's org {org!r}")
                    continue
                log.warning("dashboard.foreign_org_events_dropped", subject=env.subject)
            records += items
            owners += [i] * len(items)
        if records:
            _, rejected = await self.aggregator.ingest_records(records)
            if rejected:
                self._settle_rejections(envelopes, owners, rejected)
        self._advance("DISPATCH", envelopes)

    @staticmethod
    def _settle_rejections(
        envelopes: list[Envelope], owners: list[int], rejected: list[tuple[int, str]]
    ) -> None:
        """Reject (dead-letter) a message when all its events were refused; log the rest."""
        per_owner: dict[int, list[str]] = {}
        for index, reason in rejected:
            per_owner.setdefault(owners[index], []).append(reason)
        totals: dict[int, int] = {}
        for owner in owners:
            totals[owner] = totals.get(owner, 0) + 1
        for owner, reasons in per_owner.items():
            env = envelopes[owner]
            if len(reasons) == totals[owner]:
                env.reject(reasons[0])
            else:
                log.warning(
                    "dashboard.events_refused",
                    subject=env.subject,
                    stream_seq=env.stream_seq,
                    refused=len(reasons),
                    first=reasons[0],
                )

    async def _on_incidents(self, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            if env.org is None or not isinstance(env.data, dict):
                env.reject("payload: an incident lifecycle map on ionveil.incidents.<org>")
                continue
            try:
                check_not_future(  # against the aggregator's clock, as for dispatch events
                    parse_timestamp(env.data.get("timestamp")),
                    now=datetime.fromtimestamp(self.aggregator.now(), UTC),
                )
                await self.aggregator.ingest_incident(env.org, env.data)
            except ValidationError as exc:
                env.reject(str(exc))
        self._advance("INCIDENTS", envelopes)

    async def _on_alerts(self, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            org = env.subject.split(".")[2] if env.subject.count(".") >= 3 else None
            if org is None or not isinstance(env.data, dict):
                env.reject("payload: an alert map on ionveil.alerts.<org>.<severity>")
                continue
            try:
                await self.aggregator.ingest_alert(org, env.data)
            except ValidationError as exc:
                env.reject(str(exc))
        self._advance("ALERTS", envelopes)

    def _advance(self, stream: str, envelopes: list[Envelope]) -> None:
        if envelopes:
            self.offsets[stream] = max(self.offsets[stream], max(e.stream_seq for e in envelopes))

    # ------------------------------------------------------------------ live updates

    def _on_update(self, org: str, metric: AggregatedMetric) -> None:
        self._updates.append((org, metric))
        self._updates_ready.set()
        self.web.notify(org, metric)

    async def _publish_loop(self) -> None:
        assert self._ctx is not None
        nc = self._ctx.nc
        while True:
            await self._updates_ready.wait()
            self._updates_ready.clear()
            while self._updates:
                org, metric = self._updates.popleft()
                subject = UPDATES_SUBJECT.format(org=org, metric=metric.metric_name)
                await nc.publish(subject, encode_payload(metric))

    # ------------------------------------------------------------------ endpoints

    async def _api_snapshot(self, req: Request) -> Any:
        return await self.aggregator.get_dashboard_snapshot(_org(req))

    async def _api_metric(self, req: Request) -> Any:
        p = req.payload
        return await self.aggregator.get_metric(
            _org(req),
            _str(p, "metric_name"),
            _str(p, "window", "1h"),
            _str(p, "aggregation", "avg"),
            _dims(p.get("dimensions")),
            _time(p, "start"),
            _time(p, "end"),
        )

    async def _api_trend(self, req: Request) -> Any:
        p = req.payload
        periods = p.get("periods", p.get("lookback_periods", 24))
        return await self.trends.analyze_trend(
            _org(req), _str(p, "metric_name"), _str(p, "window", "1h"), periods
        )

    async def _api_anomalies(self, req: Request) -> Any:
        p = req.payload
        sigma = p.get("threshold_sigma", p.get("sensitivity", 2.0))
        return await self.trends.detect_anomalies(
            _org(req), _str(p, "metric_name"), _str(p, "window", "1h"), sigma
        )

    async def _api_regions(self, req: Request) -> Any:
        p = req.payload
        end = _time(p, "end") or datetime.fromtimestamp(self.aggregator.now(), UTC)
        start = _time(p, "start") or end - _window(p.get("window", "1h"))
        summary = await self.geography.get_regional_summary(_org(req), start, end)
        return [{"region": region, **values} for region, values in summary.items()]

    async def _api_heatmap(self, req: Request) -> Any:
        p = req.payload
        return await self.geography.get_heatmap_data(
            _org(req),
            _str(p, "metric_name", "dispatch_count"),
            (p.get("rows", 10), p.get("cols", 10)),
        )


class _IngestCollector:
    """``/metrics``: dispatch events by outcome (accepted, duplicates, rejected_*)."""

    def __init__(self, aggregator: DispatchAggregator) -> None:
        self._aggregator = aggregator

    def collect(self) -> Any:
        stats = self._aggregator.get_ingest_stats()
        events = CounterMetricFamily(
            "ionveil_dashboard_events",
            "Dispatch events seen by the aggregator, by outcome",
            labels=["outcome"],
        )
        for key, value in stats.items():
            if key != "buffered":
                events.add_metric([key], value)
        yield events
        yield GaugeMetricFamily(
            "ionveil_dashboard_buffered_events",
            "Events waiting for the next flush",
            value=stats["buffered"],
        )


_DISPATCH_DECODER = dispatch_decoder()


def decode_dispatch(data: bytes, headers: Mapping[str, str] | None) -> tuple[Any, bool]:
    """The DISPATCH consumer's decoder: MessagePack straight into ``WireEvent`` structs.

    A body that does not decode into well-typed events (a missing field, a wrong type, JSON)
    is decoded by ``workers.codec.decode_payload`` instead, so the aggregator's per-field
    checks name what is wrong, and undecodable bytes raise its ``ValidationError``.
    """
    if len(data) <= MAX_PAYLOAD_BYTES and not is_json_content(headers):
        try:
            return _DISPATCH_DECODER.decode(data), False
        except msgspec.MsgspecError:
            pass  # not all well-typed events: the generic path below
    return decode_payload(data, headers)


def _all_of_org(items: list[Any], org: str | None) -> bool:
    """Whether every item is an event of ``org`` (one C-level pass, no loop in Python)."""
    getter = _ORG_ATTR if type(items[0]) is WireEvent else _ORG_ID
    try:
        return set(map(getter, items)) == {org}
    except (AttributeError, KeyError, TypeError, IndexError):  # a non-event: the slow path
        return False


def _org_of(item: Any) -> Any:
    if type(item) is WireEvent:
        return item.org_id
    return item.get("org_id") if type(item) is dict else None


def _org(req: Request) -> str:
    if not req.org:
        raise ValidationError("org: missing from the subject")
    return req.org


def _str(payload: dict[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{key}: required, a string")
    return value


def _dims(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("dimensions: must be a map")
    return value


def _time(payload: dict[str, Any], key: str) -> datetime | None:
    value = payload.get(key)
    return None if value is None else parse_timestamp(value, field=key)


_WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _window(value: Any) -> timedelta:
    """``"15m"``/``"1h"``/``"1d"`` (or seconds) as a duration, at most 7 days."""
    seconds: float
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value[:-1].isdigit() and value[-1:] in _WINDOW_UNITS:
        seconds = int(value[:-1]) * _WINDOW_UNITS[value[-1]]
    else:
        raise ValidationError(f"window: like 15m, 1h or 1d, got {value!r}")
    if not 0 < seconds <= 7 * 86400:
        raise ValidationError("window: must be between 1 second and 7 days")
    return timedelta(seconds=seconds)

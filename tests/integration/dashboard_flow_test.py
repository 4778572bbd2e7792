"""The dashboard worker on real NATS JetStream and PostgreSQL.

1000+ events through JetStream (single events and arrays) are aggregated exactly and every API
endpoint answers; live updates flow to subscribers and on ``ionveil.dashboard.updates``;
incidents and alerts feed the snapshot; bad and stale events are dead-lettered and counted in
``/metrics``; a worker killed mid-stream and restarted from its checkpoint counts every event
exactly once; two replicas side by side answer the same as one.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from services.dashboard import (
    AggregationType,
    DispatchAggregator,
    MemoryCheckpointStore,
    TimeWindow,
)
from workers.codec import decode_payload, encode_payload
from workers.dashboard import DashboardWorker
from workers.runtime import WorkerHandle, run_worker
from workers.settings import Settings

_ids = itertools.count(1)
REGIONS = ("north", "south", "east")
UNITS = ("ambulance", "engine")


def _event(org: str, rng: random.Random, **extra: Any) -> dict[str, Any]:
    n = next(_ids)
    at = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 3000))
    return {
        "event_id": f"ev-{n}-{rng.random()}",
        "org_id": org,
        "dispatch_id": f"d-{n}",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "severity": rng.randint(1, 5),
        "response_time_minutes": round(rng.uniform(1, 40), 3),
        "distance_km": round(rng.uniform(0.1, 20), 3),
        "region": rng.choice(REGIONS),
        "unit_type": rng.choice(UNITS),
        "sla_met": rng.random() < 0.7,
        "metadata": {"lat": 51 + rng.random(), "lon": -0.5 + rng.random()},
        **extra,
    }


async def _publish(nc: NATS, org: str, payload: Any, msg_id: str | None = None) -> None:
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await nc.jetstream().publish(
        f"ionveil.dispatch.events.{org}", encode_payload(payload), headers=headers
    )


async def _publish_events(nc: NATS, org: str, events: list[dict[str, Any]]) -> None:
    """Half the events one per message, the rest as arrays of 50."""
    half = len(events) // 2
    for ev in events[:half]:
        await _publish(nc, org, ev, ev["event_id"])
    for i in range(half, len(events), 50):
        chunk = events[i : i + 50]
        await _publish(nc, org, chunk, f"batch-{chunk[0]['event_id']}")


async def _request(nc: NATS, subject: str, payload: dict[str, Any]) -> tuple[Any, dict]:
    reply = await nc.request(subject, encode_payload(payload), timeout=10)
    value, _ = decode_payload(reply.data, reply.headers)
    return value, reply.headers or {}


@asynccontextmanager
async def _worker(settings: Settings, **kwargs: Any) -> AsyncIterator[WorkerHandle]:
    worker = DashboardWorker(**kwargs)
    async with run_worker(worker, settings, http_port=0) as handle:
        yield handle


async def _count(agg: DispatchAggregator, org: str) -> int:
    rows = await agg.get_metric(
        org,
        "dispatch_count",
        TimeWindow.DAY_1,
        AggregationType.COUNT,
        start=datetime.now(UTC) - timedelta(days=2),
    )
    return sum(r.sample_count for r in rows)


async def test_high_throughput_ingestion_through_jetstream_and_every_endpoint(
    nc: NATS, settings: Settings
) -> None:
    """1200 events (singles and arrays) are counted exactly; all six endpoints answer."""
    rng = random.Random(1)
    events = [_event("acme", rng) for _ in range(1200)]
    async with _worker(settings) as handle:
        await _publish_events(nc, "acme", events)
        await handle.wait_idle(60)
        worker: DashboardWorker = handle.worker  # type: ignore[assignment]
        assert await _count(worker.aggregator, "acme") == 1200

        snap, _ = await _request(nc, "ionveil.api.dashboard.acme.snapshot", {})
        rate = sum(e["sla_met"] for e in events) / len(events)
        assert abs(snap["sla_compliance_rate"] - rate) < 1e-9
        avg = sum(e["response_time_minutes"] for e in events) / len(events)
        assert abs(snap["average_response_time"] - avg) < 1e-6

        rows, _ = await _request(
            nc,
            "ionveil.api.dashboard.acme.metric",
            {
                "metric_name": "response_time",
                "window": "1d",
                "aggregation": "count",
                "dimensions": {"region": "north"},
                "start": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
            },
        )
        assert sum(r["sample_count"] for r in rows) == sum(e["region"] == "north" for e in events)

        trend, _ = await _request(
            nc,
            "ionveil.api.dashboard.acme.trend",
            {"metric_name": "dispatch_count", "window": "5m"},
        )
        assert trend["trend_direction"] in ("increasing", "decreasing", "stable")
        anomalies, _ = await _request(
            nc,
            "ionveil.api.dashboard.acme.anomalies",
            {"metric_name": "response_time", "window": "1m"},
        )
        assert isinstance(anomalies, list)
        regions, _ = await _request(nc, "ionveil.api.dashboard.acme.regions", {"window": "2h"})
        assert {r["region"] for r in regions} == set(REGIONS)
        assert sum(r["dispatch_count"] for r in regions) == 1200
        cells, _ = await _request(
            nc,
            "ionveil.api.dashboard.acme.heatmap",
            {"metric_name": "dispatch_count", "rows": 4, "cols": 5},
        )
        assert len(cells) == 20 and sum(c["count"] for c in cells) == 1200

        bad, headers = await _request(
            nc, "ionveil.api.dashboard.acme.metric", {"metric_name": "nope"}
        )
        assert bad["error"]["code"] == "invalid" and "metric_name" in bad["error"]["message"]
        assert headers.get("Nats-Service-Error-Code") == "400"


async def test_live_updates_reach_subscribers_and_nats(nc: NATS, settings: Settings) -> None:
    """An ingested event yields an update to an in-process subscriber and on NATS."""
    rng = random.Random(2)
    got_nats: asyncio.Queue[Any] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await got_nats.put((msg.subject, decode_payload(msg.data, msg.headers)[0]))

    sub = await nc.subscribe("ionveil.dashboard.updates.live.>", cb=on_msg)
    async with _worker(settings, flush_interval_s=0.1) as handle:
        worker: DashboardWorker = handle.worker  # type: ignore[assignment]
        updates = worker.aggregator.subscribe_to_updates("live", ["dispatch_count"])
        first = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0)
        await _publish(nc, "live", _event("live", rng))
        update = await asyncio.wait_for(first, 10)
        assert update.metric_name == "dispatch_count" and update.value == 1.0
        subject, payload = await asyncio.wait_for(got_nats.get(), 10)
        assert subject.startswith("ionveil.dashboard.updates.live.")
        assert payload["sample_count"] >= 1
        await updates.aclose()
    await sub.unsubscribe()


async def test_incidents_and_alerts_feed_the_snapshot(nc: NATS, settings: Settings) -> None:
    """Lifecycle events set active/pending (out of order too); open alerts are listed."""
    js = nc.jetstream()
    now = datetime.now(UTC)

    async def incident(iid: str, status: str, seconds: int) -> None:
        body = {
            "incident_id": iid,
            "priority": 4,
            "status": status,
            "timestamp": (now + timedelta(seconds=seconds)).isoformat(),
        }
        await js.publish("ionveil.incidents.city", encode_payload(body))

    async with _worker(settings) as handle:
        await incident("i1", "opened", 0)
        await incident("i2", "opened", 0)
        await incident("i2", "dispatched", 10)
        await incident("i3", "arrived", 20)
        await incident("i3", "dispatched", 5)  # late, older: ignored
        for status in ("opened", "acknowledged"):
            await js.publish(
                "ionveil.alerts.city.critical",
                encode_payload(
                    {"alert_id": "a1", "status": status, "severity": "critical", "title": "SLA"}
                ),
            )
        await js.publish(
            "ionveil.alerts.city.warning",
            encode_payload(
                {"alert_id": "a2", "status": "opened", "severity": "warning", "title": "slow"}
            ),
        )
        await js.publish(
            "ionveil.alerts.city.warning",
            encode_payload(
                {"alert_id": "a2", "status": "resolved", "severity": "warning", "title": "slow"}
            ),
        )
        await handle.wait_idle(30)
        snap, _ = await _request(nc, "ionveil.api.dashboard.city.snapshot", {})
        assert (snap["pending_dispatches"], snap["active_dispatches"]) == (1, 1)
        assert [a["alert_id"] for a in snap["alerts"]] == ["a1"]
        assert snap["alerts"][0]["status"] == "acknowledged"


async def test_bad_and_stale_events_are_dead_lettered_and_counted(
    nc: NATS, settings: Settings
) -> None:
    """Invalid and too-old single events go to the DLQ; counters show in /metrics."""
    rng = random.Random(3)
    old = _event("acme", rng, timestamp=(datetime.now(UTC) - timedelta(days=3)).isoformat())
    invalid = _event("acme", rng, severity=9)
    foreign = _event("other", rng)
    async with _worker(settings) as handle:
        for ev in (old, invalid, foreign, _event("acme", rng)):
            await _publish(nc, "acme", ev)
        await handle.wait_idle(30)
        info = await nc.jetstream().stream_info("DLQ")
        assert info.state.messages == 3
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{handle.http_port}/metrics"
            async with http.get(url) as resp:
                body = await resp.text()
        assert 'ionveil_dashboard_events_total{outcome="rejected_too_old"} 1.0' in body
        assert 'ionveil_dashboard_events_total{outcome="rejected_invalid"} 1.0' in body
        snap, _ = await _request(nc, "ionveil.api.dashboard.acme.snapshot", {})
        rejected = {
            m["dimensions"]["reason"]: m["value"]
            for m in snap["metrics"]
            if m["metric_name"] == "rejected_events"
        }
        assert rejected["too_old"] == 1


async def test_kill_and_restart_mid_stream_counts_every_event_once(
    nc: NATS, settings: Settings
) -> None:
    """Acked-but-not-checkpointed events are replayed after a kill; nothing counts twice."""
    rng = random.Random(4)
    first = [_event("acme", rng) for _ in range(400)]
    second = [_event("acme", rng) for _ in range(400)]

    class Killed(DashboardWorker):
        async def teardown(self) -> None:  # a kill: no final checkpoint, nothing flushed
            await self.aggregator.aclose()

    worker = Killed(checkpoint_interval_s=3600)
    async with run_worker(worker, settings, http_port=0) as handle:
        await _publish_events(nc, "acme", first)
        await handle.wait_idle(60)
        await worker.checkpoint()
        await _publish_events(nc, "acme", second)
        # Redelivered duplicates of checkpointed events (new msg ids dodge stream dedup).
        for ev in first[:20]:
            await _publish(nc, "acme", ev, f"again-{ev['event_id']}")
        await handle.wait_idle(60)
        assert await _count(worker.aggregator, "acme") == 800
    async with _worker(settings, checkpoint_interval_s=3600) as handle:
        restarted: DashboardWorker = handle.worker  # type: ignore[assignment]
        await handle.wait_idle(60)
        assert await _count(restarted.aggregator, "acme") == 800
        snap = await restarted.aggregator.get_dashboard_snapshot("acme")
        avg = sum(e["response_time_minutes"] for e in first + second) / 800
        assert abs(snap.average_response_time - avg) < 1e-6


async def test_two_replicas_answer_the_same_as_one(nc: NATS, settings: Settings) -> None:
    """Each replica reads the whole stream: both hold identical aggregates."""
    rng = random.Random(5)
    events = [_event("acme", rng) for _ in range(600)]
    store = MemoryCheckpointStore()
    async with _worker(settings, store=store) as one, _worker(settings) as two:
        await _publish_events(nc, "acme", events)
        await one.wait_idle(60)
        await two.wait_idle(60)
        a = one.worker.aggregator  # type: ignore[attr-defined]
        b = two.worker.aggregator  # type: ignore[attr-defined]
        start = datetime.now(UTC) - timedelta(hours=2)
        for agg_type in (
            AggregationType.COUNT,
            AggregationType.AVERAGE,
            AggregationType.PERCENTILE_90,
            AggregationType.MAX,
        ):
            ra = await a.get_metric(
                "acme",
                "response_time",
                TimeWindow.MINUTE_15,
                agg_type,
                {"severity": "3"},
                start=start,
            )
            rb = await b.get_metric(
                "acme",
                "response_time",
                TimeWindow.MINUTE_15,
                agg_type,
                {"severity": "3"},
                start=start,
            )
            assert ra == rb and ra
        assert await _count(a, "acme") == await _count(b, "acme") == 600


async def test_checkpoint_is_stored_in_postgres_and_restored(nc: NATS, settings: Settings) -> None:
    """A drained worker's final checkpoint lets the next one start with the same totals."""
    rng = random.Random(6)
    async with _worker(settings) as handle:
        await _publish_events(nc, "acme", [_event("acme", rng) for _ in range(100)])
        await handle.wait_idle(30)
    t0 = time.monotonic()
    async with _worker(settings) as handle:
        agg = handle.worker.aggregator  # type: ignore[attr-defined]
        assert await _count(agg, "acme") == 100
        info = await nc.jetstream().consumer_info(
            "DISPATCH", f"dashboard-dispatch-{handle.ctx.replica_id}"
        )
        assert info.delivered.stream_seq in (0, info.config.opt_start_seq - 1)
    assert time.monotonic() - t0 < 30

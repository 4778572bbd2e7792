#!/usr/bin/env python3
"""Dashboard ingest and query speed: bare nats-py vs FastStream vs the dashboard worker.

``python bench/dashboard.py [--quick]``. Publishes dispatch events into JetStream (an embedded
nats-server unless ``IONVEIL_NATS_URL`` is set) and drains them, in the same run, with
(a) the ceiling: a bare nats-py pull-fetch loop that decodes and acks each message;
(b) a FastStream pull subscriber that decodes each message (the framework a user would pick);
(c) the dashboard worker (``workers.dashboard``) doing full validation and aggregation;
first with one event per message, then with 100-event arrays. Then, in process: the
aggregator's own ingest rate (no NATS), ``get_metric`` and ``get_dashboard_snapshot`` p99 with
1,000,000 events over 24 h, and RSS after 10,000,000 events (``--quick``: smaller sizes).
Prints a table and writes ``bench/results/dashboard.md``; ``--only arrays,service`` runs some
parts and prints their figures only.

Targets (issue 5): single events (c) >= 0.8x (a) and >= 3x (b); arrays (c) >= 0.5x (a) and
>= 300,000 events/s; get_metric p99 < 50 ms; snapshot p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import nats
from nats.aio.client import Client as NATS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _baseline import bare_fetch_loop  # noqa: E402

from services.dashboard import (  # noqa: E402
    AggregationType,
    DispatchAggregator,
    MemoryCheckpointStore,
    TimeWindow,
)
from services.dashboard._wire import dispatch_decoder  # noqa: E402
from workers.dashboard import DashboardWorker  # noqa: E402
from workers.embedded import EmbeddedNats  # noqa: E402
from workers.runtime import (  # noqa: E402
    Envelope,
    configure_logging,
    ensure_streams,
    load_catalogue,
    run_worker,
)
from workers.settings import Settings  # noqa: E402

BATCH = 256
_PARTS = ("single", "arrays", "service", "query", "rss")
SUBJECT = "ionveil.dispatch.events.bench"
REGIONS = ("north", "south", "east", "west")
UNITS = ("ambulance", "fire", "police")


def make_event(i: int, at: float, rng: random.Random) -> dict[str, Any]:
    """One wire event (RFC 3339 timestamp, coordinates in metadata)."""
    return {
        "event_id": f"e{i}-{rng.getrandbits(32)}",
        "org_id": "bench",
        "dispatch_id": f"d{i}",
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        "severity": 1 + i % 5,
        "response_time_minutes": rng.uniform(1.0, 45.0),
        "distance_km": rng.uniform(0.2, 25.0),
        "region": REGIONS[i % 4],
        "unit_type": UNITS[i % 3],
        "sla_met": rng.random() < 0.8,
        "metadata": {"lat": 48.0 + rng.random(), "lon": 2.0 + rng.random()},
    }


async def publish(nc: NATS, events: int, per_msg: int) -> int:
    """Purge DISPATCH and publish ``events`` (as messages of ``per_msg``); returns messages."""
    js = nc.jetstream()
    await ensure_streams(js, load_catalogue(), names=["DISPATCH"])
    await js.purge_stream("DISPATCH")
    rng = random.Random(7)
    now = time.time()
    messages = 0
    for start in range(0, events, per_msg):
        chunk = [
            make_event(i, now - rng.uniform(0, 240), rng)
            for i in range(start, min(events, start + per_msg))
        ]
        await nc.publish(SUBJECT, msgpack.packb(chunk[0] if per_msg == 1 else chunk))
        messages += 1
        if messages % 2000 == 0:
            await nc.flush()
    await nc.flush()
    while (await js.stream_info("DISPATCH")).state.messages < messages:
        await asyncio.sleep(0.05)
    return messages


async def bare_loop(nc: NATS, messages: int, durable: str) -> float:
    """(a) the baseline (``bench/_baseline.py``): fetch, decode, ack; returns wall seconds."""
    wall, _ = await bare_fetch_loop(nc, messages, durable, subject=SUBJECT, batch=BATCH)
    return wall


async def faststream_loop(url: str, messages: int, durable: str) -> float:
    """(b) a FastStream pull subscriber that decodes each message; returns seconds."""
    from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

    broker = NatsBroker(url, logger=None)  # no per-message log lines: its best case
    done = 0
    started = 0.0
    finished = asyncio.Event()

    @broker.subscriber(
        SUBJECT,
        stream=JStream("DISPATCH", declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=BATCH, timeout=1.0),
    )
    async def handler(body: bytes, message: NatsMessage) -> None:
        nonlocal done, started
        if not started:
            started = time.perf_counter()
        msgpack.unpackb(message.body)
        done += 1
        if done >= messages:
            finished.set()

    await broker.start()
    try:
        await asyncio.wait_for(finished.wait(), 600)
    finally:
        await broker.stop()
    return time.perf_counter() - started


class BenchDashboard(DashboardWorker):
    """The dashboard worker without PostgreSQL (in-memory checkpoints) and with a stopwatch."""

    databases = ()

    def __init__(self, events: int) -> None:
        super().__init__(
            store=MemoryCheckpointStore(),
            checkpoint_interval_s=3600,
            flush_interval_s=1.0,
            batch=BATCH,
        )
        self.target = events
        self.started = 0.0
        self.finished = asyncio.Event()

    async def _on_dispatch(self, envelopes: list[Envelope]) -> None:
        if not self.started:
            self.started = time.perf_counter()
        await super()._on_dispatch(envelopes)
        stats = self.aggregator.get_ingest_stats()
        if stats["accepted"] + stats["buffered"] >= self.target:
            self.aggregator.flush()
            self.finished.set()


async def worker_loop(settings: Settings, events: int) -> float:
    """(c) the dashboard worker, full aggregation; returns seconds (first batch to folded)."""
    worker = BenchDashboard(events)
    async with run_worker(worker, settings, http_port=0):
        await asyncio.wait_for(worker.finished.wait(), 600)
        elapsed = time.perf_counter() - worker.started
        stats = worker.aggregator.get_ingest_stats()
        assert stats["accepted"] == events, stats
    return elapsed


async def ingest_throughput(
    url: str, settings: Settings, events: int, per_msg: int, rounds: int
) -> dict[str, float]:
    """Events/s of (a), (b), (c) for one message shape (best of ``rounds``)."""
    nc = await nats.connect(url)
    best = {"a": 0.0, "b": 0.0, "c": 0.0}
    try:
        messages = await publish(nc, events, per_msg)
        for r in range(rounds):
            best["a"] = max(best["a"], events / await bare_loop(nc, messages, f"bare-{r}"))
            best["b"] = max(best["b"], events / await faststream_loop(url, messages, f"fs-{r}"))
            best["c"] = max(best["c"], events / await worker_loop(settings, events))
    finally:
        await nc.drain()
    return best


def _records(count: int, span_s: float, now: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_event(i, now - rng.uniform(0, span_s), rng) for i in range(count)]


def _p99(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def query_latency(events: int, queries: int) -> dict[str, float]:
    """get_metric / snapshot p99 (ms) over ``events`` spread across 24 h, in process."""
    agg = DispatchAggregator(max_buffer=50_000)
    now = time.time()
    started = time.perf_counter()
    for seed, start in enumerate(range(0, events, 50_000)):
        await agg.ingest_records(_records(min(50_000, events - start), 86_000, now, seed))
    agg.flush()
    load_s = time.perf_counter() - started
    rng = random.Random(3)
    metric_ms, snap_ms = [], []
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    for _ in range(queries):
        window = rng.choice([TimeWindow.MINUTE_5, TimeWindow.MINUTE_15, TimeWindow.HOUR_1])
        agg_type = rng.choice(list(AggregationType))
        dims = rng.choice(
            [None, {"region": "north"}, {"severity": "3"}, {"region": "east", "unit_type": "fire"}]
        )
        t0 = time.perf_counter()
        await agg.get_metric("bench", "response_time", window, agg_type, dims, start=day_ago)
        metric_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await agg.get_dashboard_snapshot("bench")
        snap_ms.append((time.perf_counter() - t0) * 1000)
    await agg.aclose()
    return {
        "load_eps": events / load_s,
        "metric_p99": _p99(metric_ms),
        "snapshot_p99": _p99(snap_ms),
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


async def service_ingest(events: int) -> float:
    """The aggregator alone (no NATS): events/s of ``ingest_records`` on typed 25,600-event
    batches (what the worker hands it per fetch of 256 arrays), warm, folds included."""
    per = 25_600
    now = time.time()
    decode = dispatch_decoder().decode
    batches = [
        decode(msgpack.packb(_records(min(per, events + per - i), 240, now, seed)))
        for seed, i in enumerate(range(0, events + per, per))
    ]
    agg = DispatchAggregator()
    await agg.ingest_records(batches[0])  # warm-up: combinations registered
    agg.flush()
    started = time.perf_counter()
    for records in batches[1:]:
        await agg.ingest_records(records)
    agg.flush()
    elapsed = time.perf_counter() - started
    measured = sum(map(len, batches[1:]))
    await agg.aclose()
    return measured / elapsed


async def rss_after(events: int) -> dict[str, float]:
    """RSS (MB) after ingesting ``events`` over 24 h into a fresh aggregator."""
    before = _rss_mb()
    agg = DispatchAggregator(max_buffer=50_000)
    now = time.time()
    chunk = _records(50_000, 86_000, now, 1)
    for n in range(0, events, 50_000):
        for i, rec in enumerate(chunk):  # new ids each round, same shapes (cheap to make)
            rec["event_id"] = f"r{n + i}"
        await agg.ingest_records(chunk)
    agg.flush()
    after = _rss_mb()
    stats = agg.get_ingest_stats()
    await agg.aclose()
    return {"events": stats["accepted"], "rss_mb": after, "growth_mb": after - before}


def _table(
    single: dict[str, float],
    arrays: dict[str, float],
    service: float,
    q: dict[str, float],
    mem: dict[str, float],
    sizes: dict[str, int],
) -> str:
    def ok(flag: bool) -> str:
        return "yes" if flag else "**no**"

    rows = [
        "| measure | value | target | met |",
        "| --- | ---: | --- | --- |",
        f"| single: (a) bare nats-py, events/s | {single['a']:,.0f} | | |",
        f"| single: (b) FastStream, events/s | {single['b']:,.0f} | | |",
        f"| single: (c) dashboard worker, events/s | {single['c']:,.0f} | | |",
        f"| single: (c)/(a) | {single['c'] / single['a']:.2f} | >= 0.8 | "
        f"{ok(single['c'] >= 0.8 * single['a'])} |",
        f"| single: (c)/(b) | {single['c'] / single['b']:.2f} | >= 3 | "
        f"{ok(single['c'] >= 3 * single['b'])} |",
        f"| arrays of 100: (a) bare nats-py, events/s | {arrays['a']:,.0f} | | |",
        f"| arrays of 100: (b) FastStream, events/s | {arrays['b']:,.0f} | | |",
        f"| arrays of 100: (c) dashboard worker, events/s | {arrays['c']:,.0f} | >= 300,000 | "
        f"{ok(arrays['c'] >= 300_000)} |",
        f"| arrays of 100: (c)/(a) | {arrays['c'] / arrays['a']:.2f} | >= 0.5 | "
        f"{ok(arrays['c'] >= 0.5 * arrays['a'])} |",
        f"| in-process service ingest (no NATS, typed batches), events/s | {service:,.0f} | | |",
        f"| in-process load over 24 h, events/s | {q['load_eps']:,.0f} | | |",
        f"| get_metric p99 ({sizes['query_events']:,} events / 24 h) | "
        f"{q['metric_p99']:.2f} ms | < 50 ms | {ok(q['metric_p99'] < 50)} |",
        f"| snapshot p99 ({sizes['query_events']:,} events / 24 h) | "
        f"{q['snapshot_p99']:.2f} ms | < 20 ms | {ok(q['snapshot_p99'] < 20)} |",
        f"| RSS after {mem['events']:,.0f} events over 24 h | {mem['rss_mb']:,.0f} MB "
        f"(+{mem['growth_mb']:,.0f} MB) | reported | |",
    ]
    return "\n".join(rows)


async def main(argv: list[str]) -> int:
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--only",
        default=",".join(_PARTS),
        help=f"comma-separated parts to run, of {', '.join(_PARTS)} (default: all; a partial "
        "run prints its figures but does not write the results file)",
    )
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if not parts <= set(_PARTS):
        parser.error(f"--only: choose from {', '.join(_PARTS)}")
    configure_logging("warning", "console")
    sizes = (
        {
            "single": 5_000,
            "arrays": 50_000,
            "query_events": 100_000,
            "queries": 100,
            "rss_events": 500_000,
            "rounds": 1,
        }
        if args.quick
        else {
            "single": 50_000,
            "arrays": 1_000_000,
            "query_events": 1_000_000,
            "queries": 500,
            "rss_events": 10_000_000,
            "rounds": 2,
        }
    )
    url = os.environ.get("IONVEIL_NATS_URL")
    server = None
    if not url:
        server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="ionveil-bench-")))
        url = server.start()
    settings = Settings(nats_url=url, log_format="console", log_level="warning")
    single = arrays = None
    try:
        if "single" in parts:
            single = await ingest_throughput(url, settings, sizes["single"], 1, sizes["rounds"])
        if "arrays" in parts:
            arrays = await ingest_throughput(url, settings, sizes["arrays"], 100, sizes["rounds"])
    finally:
        if server is not None:
            server.stop()
    service = await service_ingest(sizes["arrays"]) if "service" in parts else None
    q = await query_latency(sizes["query_events"], sizes["queries"]) if "query" in parts else None
    mem = await rss_after(sizes["rss_events"]) if "rss" in parts else None
    if single is None or arrays is None or service is None or q is None or mem is None:
        print({"single": single, "arrays": arrays, "service": service, "query": q, "rss": mem})
        return 0
    table = _table(single, arrays, service, q, mem, sizes)
    print(table)
    header = (
        f"# Dashboard benchmark{' (--quick)' if args.quick else ''}\n\n"
        f"`python bench/dashboard.py{' --quick' if args.quick else ''}` on "
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Sizes: "
        f"{sizes}.\n\n"
    )
    out = ROOT / "bench" / "results" / "dashboard.md"
    out.write_text(header + table + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))

#!/usr/bin/env python3
"""Runtime overhead: a bare nats-py fetch+decode+ack loop vs ``run_worker`` with a no-op handler.

``python bench/runtime.py [--quick] [--messages N] [--rounds R]``. Publishes N dispatch-event
payloads to DISPATCH (an embedded nats-server unless ``IONVEIL_NATS_URL`` is set), then drains
them with (a) the bare loop on one durable and (b) the runtime on another, each with batches of
256, alternating R rounds and keeping the best of each. Also runs the runtime with a pydantic
model (validation cost, for information). Writes ``bench/results/runtime.md``. The target
(brief): runtime >= 0.8x the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import nats
from nats.aio.client import Client as NATS
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _baseline import bare_fetch_loop  # noqa: E402

from workers.embedded import EmbeddedNats  # noqa: E402
from workers.runtime import (  # noqa: E402
    ConsumerSpec,
    Envelope,
    Worker,
    configure_logging,
    ensure_streams,
    load_catalogue,
    run_worker,
)
from workers.settings import Settings  # noqa: E402

BATCH = 256
SUBJECT = "ionveil.dispatch.events.bench"


class DispatchEventModel(BaseModel):
    """The dispatch event fields, as a consumer would validate them."""

    event_id: str
    org_id: str
    dispatch_id: str
    timestamp: datetime
    severity: int
    response_time_minutes: float
    distance_km: float
    region: str
    unit_type: str
    sla_met: bool


def event(i: int) -> bytes:
    return msgpack.packb(
        {
            "event_id": f"e{i}",
            "org_id": "bench",
            "dispatch_id": f"d{i}",
            "timestamp": "2024-05-01T10:00:00Z",
            "severity": 1 + i % 5,
            "response_time_minutes": 5.0 + (i % 17),
            "distance_km": 1.0 + (i % 23) / 3,
            "region": ("north", "south", "east", "west")[i % 4],
            "unit_type": ("ambulance", "fire", "police")[i % 3],
            "sla_met": i % 7 != 0,
        }
    )


async def publish(nc: NATS, count: int) -> None:
    js = nc.jetstream()
    await ensure_streams(js, load_catalogue(), names=["DISPATCH"])
    await js.purge_stream("DISPATCH")
    for i in range(count):
        await nc.publish(SUBJECT, event(i))
        if i % 5000 == 4999:
            await nc.flush()
    await nc.flush()
    while (await js.stream_info("DISPATCH")).state.messages < count:
        await asyncio.sleep(0.05)


async def bare_loop(nc: NATS, count: int, durable: str) -> tuple[float, float]:
    """The baseline (``bench/_baseline.py``): fetch a batch, decode each message, ack each."""
    return await bare_fetch_loop(nc, count, durable, subject=SUBJECT, batch=BATCH)


class BenchWorker(Worker):
    """A worker with one consumer whose handler only counts."""

    name = "bench-runtime"

    def __init__(self, durable: str, count: int, model: type[BaseModel] | None) -> None:
        self.durable = durable
        self.count = count
        self.model = model
        self.done = 0
        self.finished = asyncio.Event()
        self.started_at = 0.0

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                "DISPATCH",
                self.durable,
                "ionveil.dispatch.events.>",
                self.handle,
                model=self.model,
                batch=BATCH,
            )
        ]

    async def handle(self, batch: list[Envelope]) -> None:
        if not self.started_at:
            self.started_at = time.perf_counter()
        self.done += len(batch)
        if self.done >= self.count:
            self.finished.set()


async def runtime_loop(
    settings: Settings, count: int, durable: str, model: type[BaseModel] | None
) -> tuple[float, float]:
    worker = BenchWorker(durable, count, model)
    async with run_worker(worker, settings, http_port=0) as handle:
        # Timed from the worker's consumer creation (like the bare loop's) to the last batch.
        started, cpu = time.perf_counter(), time.process_time()
        await worker.finished.wait()
        elapsed = time.perf_counter() - started, time.process_time() - cpu
        await handle.ctx.nc.flush()
        await handle.ctx.js.delete_consumer("DISPATCH", durable)
    return elapsed


async def main(args: argparse.Namespace) -> None:
    embedded = None
    url = os.environ.get("IONVEIL_NATS_URL")
    if not url:
        embedded = EmbeddedNats(Path(tempfile.mkdtemp(prefix="ionveil-bench-")))
        url = embedded.start()
    settings = Settings(nats_url=url, log_level="warning")
    configure_logging("warning", "console")
    try:
        nc = await nats.connect(url)
        await publish(nc, args.messages)
        bare, runtime, validated = [], [], []
        for r in range(args.rounds):
            bare.append(await bare_loop(nc, args.messages, f"bench-bare-{r}"))
            runtime.append(await runtime_loop(settings, args.messages, f"bench-rt-{r}", None))
            validated.append(
                await runtime_loop(settings, args.messages, f"bench-val-{r}", DispatchEventModel)
            )
        await nc.drain()
    finally:
        if embedded is not None:
            embedded.stop()
    n = args.messages
    loops = (("bare", bare), ("runtime", runtime), ("runtime+model", validated))
    wall = {k: n / min(w for w, _ in v) for k, v in loops}
    cpu = {k: n / min(c for _, c in v) for k, v in loops}
    ratio_wall = wall["runtime"] / wall["bare"]
    ratio_cpu = cpu["runtime"] / cpu["bare"]
    lines = [
        "# Runtime overhead benchmark",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- messages: {n} dispatch events (MessagePack, ~250 B), batch {BATCH}, "
        f"best of {args.rounds} rounds{' (quick)' if args.quick else ''}",
        f"- command: `python bench/runtime.py{' --quick' if args.quick else ''}`",
        f"- load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        "- wall: messages / elapsed time; CPU: messages / CPU time of this Python process",
        "  (nats-server excluded; the fairer figure on a machine shared with other work)",
        "",
        "| loop | messages/s (wall) | messages/s (CPU) |",
        "| --- | ---: | ---: |",
        f"| bare nats-py fetch + msgpack decode + ack | {wall['bare']:,.0f} | {cpu['bare']:,.0f} |",
        f"| run_worker, no-op handler, no model | {wall['runtime']:,.0f} | {cpu['runtime']:,.0f} |",
        f"| run_worker, no-op handler, pydantic model | {wall['runtime+model']:,.0f} "
        f"| {cpu['runtime+model']:,.0f} |",
        "",
        f"**runtime / bare = {ratio_wall:.2f} (wall), {ratio_cpu:.2f} (CPU)** (target >= 0.80)",
        "",
    ]
    out = ROOT / "bench" / "results" / "runtime.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k messages, 1 round")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    ns = parser.parse_args()
    ns.messages = ns.messages or (20_000 if ns.quick else 200_000)
    ns.rounds = ns.rounds or (1 if ns.quick else 3)
    asyncio.run(main(ns))

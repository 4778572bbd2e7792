#!/usr/bin/env python3
"""Soak: a fixed event rate through the whole fleet for a set time; does anything pile up?

``python bench/soak.py [--quick] [--duration S] [--rate N]``. Starts an embedded nats-server
and PostgreSQL (unless ``IONVEIL_NATS_URL`` / ``IONVEIL_*_DSN`` are set; Redis is used when
``IONVEIL_REDIS_URL`` is) and every worker of ``workers.fleet.WORKERS`` as a separate process
(``python -m workers.cli worker NAME``), exactly as replicas run in production. Then, for
``--duration`` seconds (default 600; ``--quick``: 60), publishes ``--rate`` dispatch events
per second (default 200; quick: 100) plus one incident lifecycle per 20 events and one
simulation job per 30 s, and samples every ``--sample`` seconds (default 5; quick: 1):

- consumer lag: ``num_pending + num_ack_pending`` of every durable, from JetStream;
- RSS of each worker process (``/proc/<pid>/status``);
- end-to-end latency: publish time -> the event counted in the dashboard's ``dispatch_count``
  (read through its request-reply API, as a dashboard client would).

Writes ``bench/results/soak.md`` (a table over time, latency percentiles, memory growth per
worker), ``soak.json`` and ``soak.png`` (RSS, lag and latency over time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ionveil.statistics import percentile  # noqa: E402
from workers.codec import decode_payload, encode_payload  # noqa: E402
from workers.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from workers.fleet import WORKERS as FLEET_WORKERS  # noqa: E402
from workers.settings import DATABASES  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORKERS = tuple(FLEET_WORKERS)
ORG = "soak"


@dataclass
class Sample:
    """One sampling instant."""

    t_s: float
    published: int
    visible: int
    lag: dict[str, int]
    rss_mb: dict[str, float]


@dataclass
class Report:
    """Everything the soak measured."""

    duration_s: float
    rate_per_s: int
    samples: list[Sample] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    dead_letters: int = 0


# ---------------------------------------------------------------- fleet


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class Fleet:
    """The servers (embedded where not configured) and the four worker processes."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nats: EmbeddedNats | None = None
        self.pg: EmbeddedPostgres | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.env: dict[str, str] = {}

    def start(self) -> None:
        env = {
            "IONVEIL_DATA_DIR": str(self.base / "data"),
            "IONVEIL_LOG_LEVEL": "warning",
            "IONVEIL_ALERTS_CHECK_INTERVAL_S": "2",
        }
        nats_url = os.environ.get("IONVEIL_NATS_URL")
        if not nats_url:
            self.nats = EmbeddedNats(self.base / "nats")
            nats_url = self.nats.start()
        env["IONVEIL_NATS_URL"] = nats_url
        dsns = {db: os.environ.get(f"IONVEIL_{db.upper()}_DSN") for db in DATABASES}
        if not all(dsns.values()):
            self.pg = EmbeddedPostgres(self.base / "pg")
            started = self.pg.start()
            dsns = {db: dsns[db] or started[db] for db in dsns}
        env.update({f"IONVEIL_{db.upper()}_DSN": dsn for db, dsn in dsns.items() if dsn})
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        for name in WORKERS:
            port = free_port()
            self.ports[name] = port
            log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "worker", name, "--http-port", str(port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()

    async def wait_healthy(self, timeout_s: float = 120.0) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for name, port in self.ports.items():
                while True:
                    if self.procs[name].poll() is not None:
                        tail = (self.base / f"{name}.log").read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"{name} exited:\n{tail}")
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                            if resp.status == 200:
                                break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not healthy after {timeout_s}s")
                    await asyncio.sleep(0.3)

    def rss(self) -> dict[str, float]:
        return {name: round(_rss_mb(proc.pid), 1) for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()


# ---------------------------------------------------------------- load and probes


def _event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"soak-{n}",
        "org_id": ORG,
        "dispatch_id": f"d-{n}",
        "timestamp": datetime.now(UTC).isoformat(),
        "severity": 1 + n % 5,
        "response_time_minutes": float(2 + n % 15),
        "distance_km": float(n % 11),
        "region": ("north", "south", "east", "west")[n % 4],
        "unit_type": ("ambulance", "engine", "patrol")[n % 3],
        "sla_met": n % 9 != 0,
    }


def _incident(n: int, status: str) -> dict[str, Any]:
    return {
        "incident_id": f"soak-inc-{n}",
        "priority": 1 + n % 5,
        "status": status,
        "timestamp": datetime.now(UTC).isoformat(),
        "region": "north",
    }


def _job(n: int) -> dict[str, Any]:
    return {
        "simulation_id": f"soak-job-{n}",
        "scenario": {
            "name": f"soak-{n}",
            "policy_order": ["normal", "watch", "restricted"],
            "escalation_threshold": 3,
            "deescalation_thresholds": {"watch": 5, "restricted": 5},
        },
        "pattern": {"events": [[i * 5, i % 4 != 0] for i in range(120)]},
        "duration": 600,
    }


async def publish_load(
    nc: NATS, rate: int, duration_s: float, times: list[float], stop: asyncio.Event
) -> None:
    """Publish ``rate`` events per second in 10 ms ticks; record each publish time."""
    js = nc.jetstream(timeout=10)
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed >= duration_s:
            break
        due = int(elapsed * rate) + 1
        while n < due:
            await js.publish(
                f"ionveil.dispatch.events.{ORG}",
                encode_payload(_event(n)),
                headers={"Nats-Msg-Id": f"soak-{n}"},
            )
            times.append(time.monotonic())
            if n % 20 == 0:
                inc = n // 20
                for status in ("dispatched", "arrived"):
                    await js.publish(
                        f"ionveil.incidents.{ORG}",
                        encode_payload(_incident(inc, status)),
                        headers={"Nats-Msg-Id": f"soak-inc-{inc}-{status}"},
                    )
            if n % (rate * 30) == 0:
                await js.publish(
                    "ionveil.simulator.jobs",
                    encode_payload(_job(n)),
                    headers={"Nats-Msg-Id": f"soak-job-{n}"},
                )
            n += 1
        await asyncio.sleep(0.01)


async def visible_count(nc: NATS, since: datetime) -> int | None:
    """Dispatch events the dashboard counts for the soak org (its request-reply API)."""
    body = {
        "metric_name": "dispatch_count",
        "window": "1h",
        "aggregation": "sum",
        "start": (since - timedelta(hours=1)).isoformat(),
        "end": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    try:
        reply = await nc.request(f"ionveil.api.dashboard.{ORG}.metric", encode_payload(body), 5)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None
    value, _ = decode_payload(reply.data, reply.headers)
    if not isinstance(value, list):
        return None
    return round(sum(m["value"] for m in value))


async def lags(nc: NATS) -> dict[str, int]:
    """``num_pending + num_ack_pending`` per durable (dashboard replicas folded by prefix)."""
    js = nc.jetstream(timeout=5)
    out: dict[str, int] = {}
    for stream in ("DISPATCH", "INCIDENTS", "POLICY", "ALERTS", "SIMJOBS"):
        try:
            consumers = await js.consumers_info(stream)
        except nats.errors.Error:
            continue
        for info in consumers:
            name = info.name
            for prefix in ("dashboard-dispatch", "dashboard-incidents", "dashboard-alerts"):
                if name.startswith(prefix):
                    name = prefix
            out[name] = out.get(name, 0) + (info.num_pending or 0) + (info.num_ack_pending or 0)
    return out


async def sample_loop(
    nc: NATS,
    fleet: Fleet,
    report: Report,
    times: list[float],
    every_s: float,
    stop: asyncio.Event,
) -> None:
    """Sample lag, RSS and visibility; turn newly visible events into latencies."""
    started = time.monotonic()
    since = datetime.now(UTC)
    seen = 0
    next_sample = started
    while not stop.is_set():
        count = await visible_count(nc, since)
        now = time.monotonic()
        if count is not None and count > seen:
            upto = min(count, len(times))
            # The events seen[seen:upto] became visible between the previous poll and now.
            report.latencies_s.extend(now - times[i] for i in range(seen, upto))
            seen = upto
        if now >= next_sample:
            report.samples.append(
                Sample(round(now - started, 1), len(times), seen, await lags(nc), fleet.rss())
            )
            next_sample += every_s
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- report


def _growth(samples: list[Sample], name: str) -> float:
    """RSS growth (%) between the mean of the second quarter and of the last quarter."""
    n = len(samples)
    if n < 8:
        return 0.0
    q = n // 4
    early = [s.rss_mb[name] for s in samples[q : 2 * q]]
    late = [s.rss_mb[name] for s in samples[-q:]]
    base = sum(early) / len(early)
    return 100.0 * (sum(late) / len(late) - base) / base if base else 0.0


def write_report(report: Report, out_dir: Path) -> Path:
    """The markdown table, the JSON data and the PNG chart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lat = sorted(report.latencies_s)
    pct = {p: percentile(lat, p) if lat else float("nan") for p in (50, 90, 99)}
    lines = [
        "# Soak: the whole fleet at a fixed rate",
        "",
        f"`python bench/soak.py --duration {report.duration_s:g} --rate {report.rate_per_s}` "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores). {len(WORKERS)} worker "
        "processes, embedded NATS and PostgreSQL; latency = publish -> counted in the "
        "dashboard's `dispatch_count` (read through its API; polled every 0.2 s, the "
        "aggregator flushes every 1 s).",
        "",
        f"Events published: {report.samples[-1].published if report.samples else 0}; visible "
        f"at the end: {report.samples[-1].visible if report.samples else 0}; dead letters: "
        f"{report.dead_letters}.",
        "",
        "| latency | p50 | p90 | p99 | max |",
        "| --- | --- | --- | --- | --- |",
        f"| publish -> dashboard (s) | {pct[50]:.2f} | {pct[90]:.2f} | {pct[99]:.2f} | "
        f"{(lat[-1] if lat else float('nan')):.2f} |",
        "",
        "| worker | RSS start (MB) | RSS end (MB) | growth 2nd -> 4th quarter |",
        "| --- | --- | --- | --- |",
    ]
    if report.samples:
        first, last = report.samples[0], report.samples[-1]
        for name in WORKERS:
            lines.append(
                f"| {name} | {first.rss_mb[name]:.1f} | {last.rss_mb[name]:.1f} | "
                f"{_growth(report.samples, name):+.1f} % |"
            )
    consumers = sorted({c for s in report.samples for c in s.lag})
    lines += [
        "",
        "Over time (one row per ~10 % of the run; lag = pending + unacknowledged):",
        "",
        "| t (s) | published | visible | "
        + " | ".join(f"RSS {w}" for w in WORKERS)
        + " | "
        + " | ".join(f"lag {c}" for c in consumers)
        + " |",
        "| " + " | ".join(["---"] * (3 + len(WORKERS) + len(consumers))) + " |",
    ]
    step = max(1, len(report.samples) // 10)
    rows = report.samples[::step]
    if report.samples and rows[-1] is not report.samples[-1]:
        rows.append(report.samples[-1])
    for s in rows:
        lines.append(
            f"| {s.t_s:g} | {s.published} | {s.visible} | "
            + " | ".join(f"{s.rss_mb[w]:.1f}" for w in WORKERS)
            + " | "
            + " | ".join(str(s.lag.get(c, 0)) for c in consumers)
            + " |"
        )
    md = out_dir / "soak.md"
    md.write_text("\n".join(lines) + "\n")
    (out_dir / "soak.json").write_text(
        json.dumps(
            {
                "duration_s": report.duration_s,
                "rate_per_s": report.rate_per_s,
                "latency_s": {f"p{p}": v for p, v in pct.items()},
                "samples": [asdict(s) for s in report.samples],
            },
            indent=1,
        )
    )
    _chart(report, out_dir / "soak.png")
    return md


def _chart(report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return
    t = [s.t_s for s in report.samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for name in WORKERS:
        axes[0].plot(t, [s.rss_mb[name] for s in report.samples], label=name)
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend(loc="upper left", fontsize=8)
    for consumer in sorted({c for s in report.samples for c in s.lag}):
        axes[1].plot(t, [s.lag.get(consumer, 0) for s in report.samples], label=consumer)
    axes[1].set_ylabel("consumer lag (msgs)")
    axes[1].legend(loc="upper left", fontsize=7)
    # Latency over time: windows of the latencies in the order they became visible.
    lat = report.latencies_s
    if lat and t:
        per = max(1, len(lat) // max(1, len(t)))
        windows = [lat[i : i + per] for i in range(0, len(lat), per)]
        xs = [t[-1] * (i + 1) / len(windows) for i in range(len(windows))]
        axes[2].plot(xs, [percentile(sorted(w), 50) for w in windows], label="p50")
        axes[2].plot(xs, [percentile(sorted(w), 99) for w in windows], label="p99")
        axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("publish -> visible (s)")
    axes[2].set_xlabel("time (s)")
    fig.suptitle(f"IonVeil soak: {report.rate_per_s} events/s for {report.duration_s:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- main


async def soak(duration_s: float, rate: int, sample_s: float) -> Report:
    report = Report(duration_s, rate)
    with tempfile.TemporaryDirectory(prefix="ionveil-soak-") as tmp:
        fleet = Fleet(Path(tmp))
        try:
            fleet.start()
            await fleet.wait_healthy()
            nc = await nats.connect(fleet.env["IONVEIL_NATS_URL"].split(","))
            try:
                times: list[float] = []
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_loop(nc, fleet, report, times, sample_s, stop))
                await publish_load(nc, rate, duration_s, times, stop)
                # Let the fleet catch up (up to 60 s) so the last latencies are measured.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if report.samples and report.samples[-1].visible >= len(times):
                        break
                    await asyncio.sleep(0.5)
                stop.set()
                await sampler
                dlq = await nc.jetstream().stream_info("DLQ")
                report.dead_letters = dlq.state.messages
            finally:
                await nc.close()
        finally:
            fleet.stop()
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 s at 100 events/s")
    parser.add_argument("--duration", type=float, help="seconds of load (default 600)")
    parser.add_argument("--rate", type=int, help="dispatch events per second (default 200)")
    parser.add_argument("--sample", type=float, help="seconds between samples (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    duration = args.duration or (60.0 if args.quick else 600.0)
    rate = args.rate or (100 if args.quick else 200)
    sample = args.sample or (1.0 if args.quick else 5.0)
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    report = asyncio.run(soak(duration, rate, sample))
    md = write_report(report, args.out)
    print(md.read_text())
    if not report.samples or report.samples[-1].visible < report.samples[-1].published:
        print("not every event became visible", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

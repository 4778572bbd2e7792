#!/usr/bin/env python3
"""Alerts benchmark: ``python bench/alerts.py [--quick]``; writes ``bench/results/alerts.md``.

1. One check cycle over N active incidents (100,000; 20,000 with ``--quick``) with
   ``check_active_incidents`` versus one ``check_incident`` call per incident, on the same
   monitor in steady state (the alerts of incidents past a rule's cut-off are open already, so
   both paths do the same decisions and raise nothing). Target: the cycle >= 10x faster.
2. Alert lifecycle operations (raise, acknowledge, resolve: each an alert row change plus its
   hash-chained audit record in one PostgreSQL transaction) per second, beside the raw asyncpg
   insert rate of the same alert rows measured in the same run, both with the same number of
   concurrent tasks. Target: >= 0.3x.

Uses ``IONVEIL_AUDIT_DSN`` when set, else an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from services.alerts import (  # noqa: E402
    AlertRule,
    AlertSeverity,
    PostgresAlertStore,
    SLAMonitorService,
    TrackedIncident,
)
from services.alerts.postgres import _INSERT_ALERT, _alert_args  # noqa: E402
from services.audit import AuditLogger, PostgresAuditStore  # noqa: E402

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CONCURRENCY = 1


def _rules() -> list[AlertRule]:
    return [
        AlertRule("breach", "Breach", "", "sla_breach", {}, AlertSeverity.CRITICAL, ["email"]),
        AlertRule(
            "warn",
            "Warn",
            "",
            "sla_warning",
            {"sla_remaining_pct": 25},
            AlertSeverity.WARNING,
            ["email"],
        ),
    ]


async def bench_cycle(n: int) -> dict[str, float]:
    """Time one vectorised cycle and N check_incident calls over the same incidents."""
    monitor = SLAMonitorService(clock=lambda: NOW)
    for rule in _rules():
        monitor.add_rule(rule)
    rng = random.Random(42)
    incidents = []
    for i in range(n):
        priority = rng.randint(1, 5)
        target_s = {5: 8, 4: 15, 3: 30, 2: 60, 1: 120}[priority] * 60
        # ~3 % of incidents past the warning cut-off, ~1 % past the target
        elapsed = (
            rng.uniform(0, target_s * 0.78)
            if rng.random() > 0.02
            else rng.uniform(target_s * 0.75, target_s * 1.5)
        )
        incidents.append(
            TrackedIncident(f"org{i % 20}", f"i{i}", priority, NOW.timestamp() - elapsed, "north")
        )
    monitor.incidents.replace_all(incidents)
    warm = await monitor.check_active_incidents(NOW)  # raises the alerts once (untimed)
    started = time.perf_counter()
    again = await monitor.check_active_incidents(NOW)
    cycle_s = time.perf_counter() - started
    started = time.perf_counter()
    single = 0
    for inc in incidents:
        single += len(
            await monitor.check_incident(
                inc.incident_id,
                inc.org_id,
                inc.priority,
                datetime.fromtimestamp(inc.dispatch_ts, UTC),
                NOW,
            )
        )
    per_incident_s = time.perf_counter() - started
    assert again == [] and single == 0, "steady state must raise nothing"
    return {
        "incidents": n,
        "open_alerts": len(warm),
        "cycle_s": cycle_s,
        "per_incident_s": per_incident_s,
        "ratio": per_incident_s / cycle_s,
    }


async def _fresh_pool(dsn: str) -> tuple[asyncpg.Pool, str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    pool = await asyncpg.create_pool(
        dsn, min_size=CONCURRENCY, max_size=CONCURRENCY, server_settings={"search_path": schema}
    )
    return pool, schema


async def _in_parallel(items: list, work) -> float:
    queue = list(items)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def bench_lifecycle(dsn: str, m: int) -> dict[str, float]:
    """Lifecycle ops/s (audited, in PostgreSQL) vs raw inserts/s of the same rows."""
    pool, schema = await _fresh_pool(dsn)
    try:
        monitor = SLAMonitorService(
            store=PostgresAlertStore(pool, AuditLogger(PostgresAuditStore(pool))), clock=lambda: NOW
        )
        await monitor.load_state()
        for rule in _rules()[:1]:
            monitor.add_rule(rule)
        late = NOW - timedelta(minutes=9)
        raised: list = []

        async def raise_one(i: int) -> None:
            raised.extend(await monitor.check_incident(f"i{i}", "org1", 5, late))

        raise_s = await _in_parallel(list(range(m)), raise_one)
        ack_s = await _in_parallel(
            list(raised), lambda a: monitor.acknowledge_alert(a.alert_id, "bench")
        )
        resolve_s = await _in_parallel(
            list(raised), lambda a: monitor.resolve_alert(a.alert_id, "bench", "done")
        )
        ops = 3 * len(raised)
        lifecycle_rate = ops / (raise_s + ack_s + resolve_s)
        await pool.execute("CREATE TABLE raw_alerts (LIKE alerts INCLUDING ALL)")
        rows = [_alert_args(a) for a in raised]
        for row in rows:
            row[0] = "raw-" + row[0]
        sql = _INSERT_ALERT.replace("INTO alerts", "INTO raw_alerts").replace(
            "FROM alerts", "FROM raw_alerts"
        )

        async def insert(row: list) -> None:
            await pool.execute(sql, *row, None)

        raw_s = await _in_parallel(rows, insert)
        raw_rate = len(rows) / raw_s
        chain_ok = (await monitor.audit.verify_chain()).ok
        return {
            "operations": ops,
            "lifecycle_ops_s": lifecycle_rate,
            "raw_inserts_s": raw_rate,
            "ratio": lifecycle_rate / raw_rate,
            "chain_ok": float(chain_ok),
        }
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def main(quick: bool) -> int:
    """Run both measurements, print them and write the results file."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    n, m = (20_000, 300) if quick else (100_000, 2_000)
    cycle = await bench_cycle(n)
    embedded = None
    dsn = os.environ.get("IONVEIL_AUDIT_DSN")
    if not dsn:
        from workers.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="ionveil-bench-")))
        dsn = embedded.start()["audit"]
    try:
        life = await bench_lifecycle(dsn, m)
    finally:
        if embedded is not None:
            embedded.stop()
    ok_cycle, ok_life = cycle["ratio"] >= 10, life["ratio"] >= 0.3
    lines = [
        "# Alerts benchmark" + (" (--quick)" if quick else ""),
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| active incidents | {cycle['incidents']:,} ({cycle['open_alerts']:,} with open "
        "alerts) | |",
        f"| one vectorised check cycle | {cycle['cycle_s'] * 1000:.1f} ms | |",
        f"| check_incident per incident | {cycle['per_incident_s'] * 1000:.1f} ms | |",
        f"| cycle speed-up | {cycle['ratio']:.1f}x | >= 10x {'OK' if ok_cycle else 'MISSED'} |",
        f"| lifecycle ops/s (raise+ack+resolve, audited) | {life['lifecycle_ops_s']:,.0f} | |",
        f"| raw asyncpg inserts/s (same rows) | {life['raw_inserts_s']:,.0f} | |",
        f"| lifecycle / raw | {life['ratio']:.2f}x | >= 0.3x {'OK' if ok_life else 'MISSED'} |",
        f"| audit chain verifies | {'yes' if life['chain_ok'] else 'NO'} | |",
        "",
        f"Concurrency {CONCURRENCY} tasks for both PostgreSQL measurements; "
        f"{life['operations']:,} lifecycle operations.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / "alerts.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0 if ok_cycle and ok_life else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main("--quick" in sys.argv)))

"""The fleet under faults: exact outcomes after kills, restarts and outages.

Every test runs every worker of ``workers.fleet.WORKERS`` as its own process
(``python -m workers.cli worker NAME``) on this module's own NATS, PostgreSQL and Redis,
publishes a known workload (N dispatch events, M incidents of which K breach their SLA, J
simulation jobs), injects one fault while the workload flows, and checks exactly: the
dashboard, the analytics recorder and the policy engine count N events, each breach raised
one alert and one webhook notification, every job completed and published its result once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.faults._env import FaultEnv, Outcome, Workload
from tests.faults._figures import FIGURES
from tests.faults._procs import health_status
from tests.faults._servers import PrivatePostgres, PrivateRedis
from tests.faults._workload import PublishStats
from workers.embedded import EmbeddedNats
from workers.fleet import WORKERS
from workers.runtime import load_catalogue

pytestmark = pytest.mark.faults

# worker -> (stream, durable name prefix) of the consumer whose in-flight batch a kill cuts
DURABLES = {
    "policy": ("DISPATCH", "policy-engine"),
    "analytics": ("DISPATCH", "analytics-recorder"),
    "simulator": ("SIMJOBS", "simulator-jobs"),
    "dashboard": ("DISPATCH", "dashboard-dispatch"),
    "alerts": ("INCIDENTS", "alerts-incidents"),
}


@pytest.fixture(scope="module")
def private_nats(fault_dir: Path) -> Iterator[EmbeddedNats]:
    """This module's own single NATS server (its store survives a restart)."""
    server = EmbeddedNats(fault_dir / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def env(
    private_nats: EmbeddedNats,
    private_pg: PrivatePostgres,
    private_redis: PrivateRedis | None,
    tmp_path: Path,
) -> AsyncIterator[FaultEnv]:
    """Fresh schemas, streams and webhook on the module's servers; workers stopped after."""
    if private_redis is not None and not private_redis.running:
        private_redis.start()
    environment = FaultEnv(tmp_path, [private_nats.url], private_pg, private_redis)
    await environment.reset()
    try:
        yield environment
    finally:
        await environment.stop_workers()


def _check(name: str, wl: Workload, outcome: Outcome, stats: PublishStats, faults: int) -> None:
    lost, dups = outcome.lost_and_duplicates(wl)
    FIGURES.record(name, faults=faults, published=stats.published, lost=lost, dups=dups)
    assert outcome.dashboard_events == wl.events, outcome
    assert outcome.policy_outcomes == wl.events, outcome
    assert outcome.analytics_records == wl.events, outcome
    assert outcome.alerts == wl.breaches, outcome
    assert len(outcome.notifications) == wl.breaches, outcome
    assert all(n == 1 for n in outcome.notifications.values()), outcome.notifications
    assert outcome.jobs_completed == wl.jobs, outcome
    assert all(n == 1 for n in outcome.results.values()), outcome.results
    assert (lost, dups) == (0, 0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("victim", sorted(WORKERS))
async def test_worker_killed_mid_batch_and_restarted(env: FaultEnv, victim: str) -> None:
    """kill -9 of one worker while the workload flows, restarted at once: nothing lost,
    nothing counted twice (redelivery + idempotency by id, checkpoints + replay)."""
    await env.start_workers()
    proc = env.workers[victim][0]
    in_flight: list[int] = []

    async def fault() -> None:
        # Best effort "mid-batch": wait (up to 3 s) until the victim holds unacked messages.
        in_flight.append(await env.wait_unacked(DURABLES[victim], timeout_s=3.0))
        proc.kill()
        await asyncio.sleep(0.5)
        proc.start()
        await proc.wait_health(200, timeout_s=90)

    # A message in flight at the kill comes back after its consumer's ack_wait (30 s; a
    # simulation job's heartbeats stop with its worker), so wait that long.
    durable = DURABLES[victim][1]
    entry = load_catalogue().consumer(durable)
    ack_wait_s = entry.ack_wait_s if entry is not None else 30.0
    wl = Workload()
    started = time.monotonic()
    outcome, stats = await env.run(wl, fault, settle_s=ack_wait_s + 120.0)
    FIGURES.details.append(
        f"  kill -9 {victim}: {in_flight[0]} message(s) unacked at the kill, settled in "
        f"{time.monotonic() - started:.0f} s (ack_wait {ack_wait_s:g} s)"
    )
    _check(f"kill -9 {victim}", wl, outcome, stats, faults=1)


async def test_nats_restarted_with_its_store(env: FaultEnv, private_nats: EmbeddedNats) -> None:
    """The NATS server is SIGKILLed and restarted on the same port with its JetStream store:
    workers reconnect and resume; publishes retried with the same ids are stored once."""
    await env.start_workers()

    async def fault() -> None:
        private_nats.kill()
        await asyncio.sleep(2.0)
        private_nats.start()
        for procs in env.workers.values():
            await procs[0].wait_health(200, timeout_s=90)

    wl = Workload()
    outcome, stats = await env.run(wl, fault)
    _check("nats restart", wl, outcome, stats, faults=1)


async def test_postgres_stopped_for_ten_seconds(env: FaultEnv) -> None:
    """PostgreSQL stops for 10 s mid-workload: every database worker's /health turns 503
    naming the database, then 200 after the restart; messages were nak'ed and retried, so
    the totals are exact."""
    await env.start_workers()
    seen_503: dict[str, str] = {}

    async def fault() -> None:
        env.pg.stop_server()
        stopped = time.monotonic()
        while time.monotonic() - stopped < 10.0:
            for name, procs in env.workers.items():
                code, body = await health_status(procs[0].http_port)
                if code == 503 and name not in seen_503:
                    seen_503[name] = str(body.get("reasons"))
            await asyncio.sleep(0.25)
        env.pg.start_server()
        for procs in env.workers.values():
            await procs[0].wait_health(200, timeout_s=90)

    wl = Workload()
    outcome, stats = await env.run(wl, fault, fault_at=0.3)
    assert set(seen_503) == set(env.workers), seen_503  # every worker has a database
    assert all("database" in reason for reason in seen_503.values()), seen_503
    _check("postgres 10 s outage", wl, outcome, stats, faults=1)


async def test_redis_stopped(env: FaultEnv) -> None:
    """Redis is killed (its keys are gone) and restarted empty while breaches are detected:
    /health says 503 naming Redis, then 200 again; no alert is lost, raised twice or
    notified twice (the check loop survives Redis errors and retries next cycle)."""
    if env.redis is None:
        pytest.skip("redis-server not installed")
    redis = env.redis
    await env.start_workers()

    unhealthy: set[str] = set()

    async def fault() -> None:
        redis.kill()
        stopped = time.monotonic()
        while time.monotonic() - stopped < 5.0:
            for name, procs in env.workers.items():
                code, body = await health_status(procs[0].http_port)
                if code == 503 and "redis" in str(body.get("reasons")):
                    unhealthy.add(name)
            await asyncio.sleep(0.25)
        redis.start()
        for procs in env.workers.values():  # back to 200: no loop died on a Redis error
            await procs[0].wait_health(200, timeout_s=60)

    wl = Workload()
    outcome, stats = await env.run(wl, fault, fault_at=0.4)
    assert unhealthy == set(env.workers), unhealthy
    _check("redis outage", wl, outcome, stats, faults=1)


async def test_two_replicas_of_each_worker_one_killed(env: FaultEnv) -> None:
    """Two replicas of every worker share the work; one replica of each is SIGKILLed mid-
    workload and not restarted: the survivors finish it, exactly."""
    await env.start_workers(per_worker=2)

    async def fault() -> None:
        for procs in env.workers.values():
            procs[0].kill()

    wl = Workload()
    outcome, stats = await env.run(wl, fault)
    _check(f"replica killed (x{len(env.workers)})", wl, outcome, stats, faults=len(env.workers))

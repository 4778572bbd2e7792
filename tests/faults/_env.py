"""A whole private IonVeil environment for one fault test module.

Its own NATS (single node or a three-node cluster), PostgreSQL, Redis and a webhook receiver;
worker subprocesses pointed at them; a known workload; and exact checks of the outcome through
the workers' own APIs. Each test gets fresh PostgreSQL schemas, no streams and a fresh Redis
prefix, so tests of one module share the (slow to start) servers but not their state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
from aiohttp import web
from nats.aio.client import Client as NATS

from tests.faults._procs import WorkerProcess
from tests.faults._servers import PrivatePostgres, PrivateRedis
from tests.faults._workload import (
    PublishStats,
    dispatch_events,
    incident_lifecycle,
    publish_reliably,
)
from tests.infra import with_search_path
from workers.codec import decode_payload, encode_payload
from workers.fleet import WORKERS

__all__ = ["BREACH_RULE", "FaultEnv", "Outcome", "Webhook", "Workload"]

BREACH_RULE = {
    "rule_id": "faults-breach",
    "name": "SLA breach",
    "description": "an incident past its SLA target",
    "condition_type": "sla_breach",
    "threshold_config": {},
    "severity": "critical",
    "notification_channels": ["hook"],
}
WORKER_NAMES = tuple(WORKERS)


@dataclass
class Webhook:
    """A real local webhook receiver counting notifications per alert (deduplicated by key)."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    repeats: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""

        async def hook(request: web.Request) -> web.Response:
            # As a real receiver does: a repeat of a key already taken (an effectively-once
            # re-send after a crash between send and record) is acknowledged and dropped.
            key = request.headers.get("Idempotency-Key", "")
            body = await request.json()
            if key and key in self.keys:
                self.repeats += 1
                return web.json_response({"ok": True, "repeat": True})
            self.posts.append(body)
            self.keys.append(key)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    def per_alert(self, rule_id: str) -> Counter[str]:
        """POSTs received per alert id, for alerts of ``rule_id``."""
        meta = [body.get("metadata") or {} for body in self.posts]
        return Counter(str(m.get("alert_id")) for m in meta if m.get("rule_id") == rule_id)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Workload:
    """N dispatch events, M incidents of which K breach, J simulation jobs (known ids)."""

    org: str = "metro"
    events: int = 400
    incidents: int = 20
    breaches: int = 5
    jobs: int = 4
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    breaching: set[str] = field(default_factory=set, init=False)  # ids, set by messages()

    def messages(self) -> list[tuple[str, dict[str, Any], str]]:
        """``(subject, payload, msg id)`` in publishing order, kinds interleaved."""
        dispatch = [
            (f"ionveil.dispatch.events.{self.org}", e, e["event_id"])
            for e in dispatch_events(self.org, self.events, prefix=self.tag)
        ]
        incidents, self.breaching = incident_lifecycle(self.org, self.incidents, self.breaches)
        inc = [
            (f"ionveil.incidents.{self.org}", m, f"{m['incident_id']}-{m['status']}")
            for m in incidents
        ]
        jobs = [
            ("ionveil.simulator.jobs", self.job(i), f"job-{self.tag}-{i}") for i in range(self.jobs)
        ]
        out: list[tuple[str, dict[str, Any], str]] = []
        extra = inc + jobs
        step = max(1, len(dispatch) // max(1, len(extra)))
        for i, item in enumerate(dispatch):
            out.append(item)
            if i % step == 0 and extra:
                out.append(extra.pop(0))
        return out + extra

    def job(self, i: int) -> dict[str, Any]:
        """A small simulation job with a known id."""
        return {
            "simulation_id": f"job-{self.tag}-{i}",
            "scenario": {
                "name": f"faults-{i}",
                "policy_order": ["normal", "watch", "restricted"],
                "escalation_threshold": 3,
                "deescalation_thresholds": {"watch": 4, "restricted": 4},
            },
            "pattern": {"events": [[s * 5, s % 3 != 0] for s in range(60)]},
            "duration": 300,
        }


@dataclass
class Outcome:
    """What the fleet reports after the workload (compared with what was published)."""

    dashboard_events: int
    policy_outcomes: int
    analytics_records: int
    alerts: int
    notifications: Counter[str]
    jobs_completed: int
    # Results seen on the core subject per job id (core NATS: a result published while this
    # client reconnects is not seen, so only "never twice" is checked from it).
    results: Counter[str] = field(default_factory=Counter)

    def lost_and_duplicates(self, wl: Workload) -> tuple[int, int]:
        """``(lost, duplicated)`` over events, alerts, notifications and jobs."""
        lost = max(0, wl.events - self.dashboard_events) + max(0, wl.events - self.policy_outcomes)
        lost += max(0, wl.events - self.analytics_records)
        lost += max(0, wl.breaches - self.alerts) + max(0, wl.jobs - self.jobs_completed)
        lost += max(0, wl.breaches - len(self.notifications))
        dups = max(0, self.dashboard_events - wl.events) + max(0, self.policy_outcomes - wl.events)
        dups += max(0, self.analytics_records - wl.events)
        dups += max(0, self.alerts - wl.breaches)
        dups += sum(n - 1 for n in self.notifications.values() if n > 1)
        dups += sum(n - 1 for n in self.results.values() if n > 1)
        return lost, dups


@dataclass
class FaultEnv:
    """The servers of one module plus the per-test state (schemas, workers, webhook)."""

    base: Path
    nats_urls: list[str]
    pg: PrivatePostgres
    redis: PrivateRedis | None
    replicas: int = 1
    workers: dict[str, list[WorkerProcess]] = field(default_factory=dict)
    hook: Webhook = field(default_factory=Webhook)
    dsns: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    async def reset(self) -> None:
        """Fresh schemas, no streams, a new Redis prefix and webhook for the next test."""
        schema = f"f_{uuid.uuid4().hex[:10]}"
        self.dsns = {}
        for name, dsn in self.pg.dsns.items():
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'CREATE SCHEMA "{schema}"')
            finally:
                await conn.close()
            self.dsns[name] = with_search_path(dsn, schema)
        self.prefix = f"faults:{schema}"
        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=10)
            for info in await js.streams_info():
                await js.delete_stream(info.config.name)
        finally:
            await nc.close()
        self.hook = Webhook()
        await self.hook.start()

    def env(self) -> dict[str, str]:
        """The ``IONVEIL_*`` environment of a worker process."""
        env = {
            "IONVEIL_NATS_URL": ",".join(self.nats_urls),
            "IONVEIL_CORE_DSN": self.dsns["core"],
            "IONVEIL_ANALYTICS_DSN": self.dsns["analytics"],
            "IONVEIL_AUDIT_DSN": self.dsns["audit"],
            "IONVEIL_DATA_DIR": str(self.base / "data"),
            "IONVEIL_LOG_FORMAT": "json",
            "IONVEIL_ALERTS_CHECK_INTERVAL_S": "0.5",
            "IONVEIL_ALERTS_CHANNELS": json.dumps({"hook": self.hook.url}),
            "IONVEIL_ALERTS_REDIS_PREFIX": self.prefix,
            "IONVEIL_STREAM_REPLICAS": str(self.replicas),
        }
        if self.redis is not None:
            env["IONVEIL_REDIS_URL"] = self.redis.url
        return env

    async def start_workers(self, per_worker: int = 1) -> None:
        """Start every worker (``per_worker`` replicas each) and wait until all are healthy."""
        self.workers = {
            name: [WorkerProcess(name, self.env(), self.base / "logs") for _ in range(per_worker)]
            for name in WORKER_NAMES
        }
        everyone = [proc for procs in self.workers.values() for proc in procs]
        for proc in everyone:
            proc.start()
        await asyncio.gather(*(proc.wait_health(200, timeout_s=120) for proc in everyone))

    async def stop_workers(self) -> None:
        """SIGTERM every worker (drain) and stop the webhook receiver."""
        for procs in self.workers.values():
            for proc in procs:
                proc.terminate()
        self.workers = {}
        await self.hook.stop()

    async def connect(self) -> NATS:
        """A reconnecting client of this environment's NATS."""
        return await nats.connect(
            self.nats_urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )

    async def wait_unacked(self, durable: tuple[str, str], timeout_s: float) -> int:
        """Poll until a consumer (by stream and name prefix) has unacknowledged messages, or
        ``timeout_s`` passed; returns how many it had at the end."""
        stream, prefix = durable
        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=2)
            deadline = time.monotonic() + timeout_s
            while True:
                unacked = 0
                with contextlib.suppress(nats.errors.Error):  # a leader moving: ask again
                    for info in await js.consumers_info(stream):
                        if info.name.startswith(prefix):
                            unacked += info.num_ack_pending or 0
                if unacked or time.monotonic() > deadline:
                    return unacked
                await asyncio.sleep(0.01)
        finally:
            await nc.close()

    async def request(
        self, nc: NATS, subject: str, body: dict[str, Any], *, not_found: Any = ...
    ) -> Any:
        """A request answered without an error (retried while workers restart or a database
        is away); ``not_found`` is returned for a 404 when given."""
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await nc.request(subject, encode_payload(body), timeout=5)
                value, _ = decode_payload(reply.data, reply.headers)
                code = (reply.headers or {}).get("Nats-Service-Error-Code")
                if code is None:
                    return value
                if code == "404" and not_found is not ...:
                    return not_found
                if not code.startswith("5"):
                    raise AssertionError(f"{subject}: {value}")
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{subject}: no successful answer in 60 s")
            await asyncio.sleep(0.5)

    async def run(
        self,
        workload: Workload,
        fault: Callable[[], Awaitable[None]],
        *,
        fault_at: float = 0.5,
        settle_s: float = 150.0,
    ) -> tuple[Outcome, PublishStats]:
        """Add the breach rule, publish the workload with ``fault`` at ``fault_at`` of it, wait
        until the fleet has settled, and read the outcome."""
        nc = await self.connect()
        results: Counter[str] = Counter()

        async def on_result(msg: Any) -> None:
            results[msg.subject.rsplit(".", 1)[-1]] += 1

        await nc.subscribe("ionveil.simulator.results.*", cb=on_result)
        try:
            await self.request(nc, "ionveil.api.alerts.rules.add", BREACH_RULE)
            js = nc.jetstream(timeout=5)
            stats = PublishStats()
            messages = workload.messages()
            at = int(len(messages) * fault_at)
            injected: asyncio.Task[None] | None = None
            for i, (subject, payload, msg_id) in enumerate(messages):
                if i == at:  # the fault runs beside the publisher, which keeps going
                    injected = asyncio.create_task(fault())
                    await asyncio.sleep(0)
                await publish_reliably(js, subject, payload, msg_id, stats)
                if i % 25 == 0:
                    await asyncio.sleep(0.02)  # a steady rate, so the fault lands mid-stream
            if injected is not None:
                await injected
            outcome = await self.settle(nc, workload, settle_s)
            outcome.results = results
        finally:
            await nc.close()
        return outcome, stats

    async def settle(self, nc: NATS, wl: Workload, timeout_s: float = 150.0) -> Outcome:
        """Poll until the expected totals are reached (or the time is up), wait a little more
        for stragglers (duplicates would show up then), and return what the fleet reports."""
        deadline = time.monotonic() + timeout_s
        outcome = await self.outcome(nc, wl)
        while time.monotonic() < deadline and not self._complete(outcome, wl):
            await asyncio.sleep(1.0)
            outcome = await self.outcome(nc, wl)
        # Messages a killed worker held come back after ack_wait: wait for them to be
        # redelivered and settled, so a double count would show in the totals read below.
        await self.wait_consumers_idle(nc, max(5.0, deadline - time.monotonic()))
        await asyncio.sleep(2.0)
        return await self.outcome(nc, wl)

    @staticmethod
    async def wait_consumers_idle(nc: NATS, timeout_s: float) -> None:
        """Until no shared durable has pending or unacknowledged messages (or time is up).

        Per-replica dashboard durables are left out: a killed replica's durable keeps its
        unacked messages until the server deletes it, and the dashboard's exactness comes from
        checkpoint + replay, not from redelivery.
        """
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = 0
            with contextlib.suppress(nats.errors.Error):  # a leader moving: ask again
                for stream in ("DISPATCH", "INCIDENTS", "POLICY", "ALERTS", "SIMJOBS"):
                    for info in await js.consumers_info(stream):
                        if not info.name.startswith("dashboard-"):
                            busy += (info.num_pending or 0) + (info.num_ack_pending or 0)
                if not busy:
                    return
            await asyncio.sleep(0.5)

    @staticmethod
    def _complete(o: Outcome, wl: Workload) -> bool:
        return (
            o.dashboard_events >= wl.events
            and o.policy_outcomes >= wl.events
            and o.analytics_records >= wl.events
            and o.alerts >= wl.breaches
            and len(o.notifications) >= wl.breaches
            and o.jobs_completed >= wl.jobs
        )

    async def outcome(self, nc: NATS, wl: Workload) -> Outcome:
        """Read the totals from the workers' APIs and the webhook."""
        metric = await self.request(
            nc,
            f"ionveil.api.dashboard.{wl.org}.metric",
            {"metric_name": "dispatch_count", "window": "1h", "aggregation": "sum"},
        )
        dashboard = round(sum(m["value"] for m in metric))
        state = await self.request(nc, f"ionveil.api.policy.{wl.org}.state", {})
        recorded = await self.request(nc, f"ionveil.api.analytics.{wl.org}.statistics", {})
        active = await self.request(nc, f"ionveil.api.alerts.{wl.org}.active", {})
        breach_alerts = [a for a in active if a.get("rule_id") == BREACH_RULE["rule_id"]]
        completed = 0
        for i in range(wl.jobs):
            status = await self.request(
                nc,
                "ionveil.api.simulator.status",
                {"simulation_id": f"job-{wl.tag}-{i}"},
                not_found={},
            )
            completed += status.get("status") == "completed"
        return Outcome(
            dashboard_events=dashboard,
            policy_outcomes=int(state["outcomes_recorded"]),
            analytics_records=int(recorded["count"]),
            alerts=len(breach_alerts),
            notifications=self.hook.per_alert(BREACH_RULE["rule_id"]),
            jobs_completed=completed,
        )

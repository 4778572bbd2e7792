"""The alerting service on real PostgreSQL (and Redis when configured).

Two monitors on one database stand for two replicas: each alert is raised once, each
notification sent once (to a real local webhook receiver), each escalation applied once, and a
restarted monitor escalates on time from what is stored.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from services.alerts import (
    AlertRule,
    AlertSeverity,
    AlertStatus,
    EscalationLevel,
    EscalationManager,
    EscalationPolicy,
    PostgresAlertStore,
    RedisHotState,
    SLAMonitorService,
)
from services.audit import AuditLogger, PostgresAuditStore
from services.compliance.sla import SLAMonitor
from services.notifications import ChannelRegistry, WebhookChannel
from tests.support import ManualClock

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


@dataclass
class Receiver:
    """A real local webhook endpoint recording what it is sent."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        async def _wait() -> None:
            while len(self.bodies) < count:
                self.got.clear()
                await self.got.wait()

        await asyncio.wait_for(_wait(), timeout_s)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An aiohttp webhook receiver on a free port."""
    box: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        box[0].bodies.append(await request.json())
        box[0].keys.append(request.headers.get("Idempotency-Key", ""))
        box[0].got.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    box.append(Receiver(f"http://127.0.0.1:{port}/hook"))
    yield box[0]
    await runner.cleanup()


def _rules() -> list[AlertRule]:
    return [
        AlertRule("breach", "Breach", "", "sla_breach", {}, AlertSeverity.CRITICAL, ["hook"]),
        AlertRule(
            "warn",
            "Warn",
            "",
            "sla_warning",
            {"sla_remaining_pct": 25},
            AlertSeverity.WARNING,
            ["hook"],
        ),
    ]


_OPEN_REGISTRIES: list[ChannelRegistry] = []


@pytest.fixture(autouse=True)
async def _close_registries() -> AsyncIterator[None]:
    """Close the webhook channels a test's replicas opened."""
    yield
    while _OPEN_REGISTRIES:
        await _OPEN_REGISTRIES.pop().close()


async def _replica(
    pool: asyncpg.Pool,
    clock: ManualClock,
    *,
    url: str | None = None,
    hot: RedisHotState | None = None,
) -> SLAMonitorService:
    channels = None
    if url is not None:
        channels = ChannelRegistry()
        channels.register("hook", WebhookChannel(url, name="hook", backoff_s=0.05))
        _OPEN_REGISTRIES.append(channels)
    store = PostgresAlertStore(pool, AuditLogger(PostgresAuditStore(pool)))
    monitor = SLAMonitorService(store=store, clock=clock, channels=channels, hot_state=hot)
    await monitor.load_state()
    for rule in _rules():
        await monitor.save_rule(rule)
    return monitor


async def test_two_replicas_raise_each_alert_once(audit_pool: asyncpg.Pool) -> None:
    """Concurrent checks of the same 40 incidents on two replicas raise 80 alerts in all
    (two rules each), every one audited, and the chain verifies."""
    clock = ManualClock(T0)
    a, b = await _replica(audit_pool, clock), await _replica(audit_pool, clock)
    incidents = [(f"i{n}", clock() - timedelta(minutes=9)) for n in range(40)]
    results = await asyncio.gather(
        *(m.check_incident(iid, "org1", 5, at) for iid, at in incidents for m in (a, b))
    )
    raised = [alert for batch in results for alert in batch]
    assert len(raised) == 80
    assert len({(x.rule_id, x.incident_id) for x in raised}) == 80
    assert await audit_pool.fetchval("SELECT count(*) FROM alerts") == 80
    opened = await a.audit.query(action="alert.opened", limit=1000)
    assert len(opened) == 80
    assert (await a.audit.verify_chain()).ok


async def test_concurrent_lifecycle_operations(audit_pool: asyncpg.Pool) -> None:
    """Acknowledging the same alerts from two replicas at once: one wins each, the other
    gets ValueError; resolves then apply once and the cool-down holds on both replicas."""
    clock = ManualClock(T0)
    a, b = await _replica(audit_pool, clock), await _replica(audit_pool, clock)
    for n in range(20):
        await a.check_incident(f"i{n}", "org1", 5, clock() - timedelta(minutes=9))
    alerts = await b.get_active_alerts("org1", severity=AlertSeverity.CRITICAL)
    assert len(alerts) == 20
    outcomes = await asyncio.gather(
        *(
            m.acknowledge_alert(x.alert_id, f"user-{i}")
            for x in alerts
            for i, m in enumerate((a, b))
        ),
        return_exceptions=True,
    )
    wins = [o for o in outcomes if not isinstance(o, BaseException)]
    losses = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(wins) == 20 and all(isinstance(o, ValueError) for o in losses)
    await asyncio.gather(*(a.resolve_alert(x.alert_id, "ann", "done") for x in alerts))
    assert await b.check_incident("i0", "org1", 5, clock() - timedelta(minutes=9)) == []
    clock.advance(6)
    again = await b.check_incident("i0", "org1", 5, clock() - timedelta(minutes=15))
    assert [x.rule_id for x in again] == ["breach"]


async def test_end_to_end_notification_once_per_change(
    audit_pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """SLA check -> alert -> one webhook POST per change and channel, even with two replicas
    checking and escalating the same incident; deliveries are audited."""
    clock = ManualClock(T0)
    a = await _replica(audit_pool, clock, url=receiver.url)
    b = await _replica(audit_pool, clock, url=receiver.url)
    policy = EscalationPolicy(
        "p",
        "chain",
        [
            {"level": 1, "timeout_minutes": 5, "channels": ["hook"]},
            {"level": 2, "timeout_minutes": 5, "channels": ["hook"]},
        ],
    )
    managers = [EscalationManager(a), EscalationManager(b)]
    for manager in managers:
        manager.set_policy("org1", policy)
    dispatched = clock() - timedelta(minutes=7)  # P5: warning (12.5 % left), no breach yet
    await asyncio.gather(
        a.check_incident("i1", "org1", 5, dispatched), b.check_incident("i1", "org1", 5, dispatched)
    )
    await receiver.wait_for(1)
    clock.advance(5)
    stepped = await asyncio.gather(*(m.check_escalations() for m in managers))
    assert sum(len(s) for s in stepped) == 1  # both replicas checked; one escalation applied
    await receiver.wait_for(2)
    await a.notifier.drain()
    await b.notifier.drain()
    changes = sorted(
        (body["metadata"]["rule_id"], body["metadata"]["change"]) for body in receiver.bodies
    )
    assert len(receiver.keys) == len(set(receiver.keys))  # never the same change twice
    assert changes == [("warn", "escalated"), ("warn", "opened")]
    rows = await audit_pool.fetch("SELECT ok FROM notifications_sent")
    assert len(rows) == len(receiver.bodies) and all(r["ok"] for r in rows)
    sent = await a.audit.query(action="notification.sent", limit=100)
    assert len(sent) == len(receiver.bodies)


async def test_escalation_timing_survives_restart(audit_pool: asyncpg.Pool) -> None:
    """Escalation timers come from stored timestamps: a restarted replica escalates at the
    right time, once, even when the old and new replica check together."""
    clock = ManualClock(T0)
    old = await _replica(audit_pool, clock)
    old_manager = EscalationManager(old)
    policy = EscalationPolicy(
        "p",
        "chain",
        [
            {"level": 1, "timeout_minutes": 10, "channels": ["hook"]},
            {"level": 3, "timeout_minutes": 10, "channels": ["hook"]},
        ],
    )
    await old_manager.save_policy("org1", policy)
    alert = next(
        x
        for x in await old.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
        if x.rule_id == "breach"
    )
    clock.advance(9)
    assert await old_manager.check_escalations() == []
    new = SLAMonitorService(store=PostgresAlertStore(audit_pool, old.audit), clock=clock)
    new_manager = EscalationManager(new)
    await new.load_state()
    assert new_manager.get_policy("org1") == policy
    assert [r.rule_id for r in new.get_rules()] == ["breach", "warn"]
    clock.advance(1)
    results = await asyncio.gather(old_manager.check_escalations(), new_manager.check_escalations())
    escalated = [x for batch in results for x in batch if x.alert_id == alert.alert_id]
    assert len(escalated) == 1
    stored = await new.get_alert(alert.alert_id)
    assert stored.escalation_level is EscalationLevel.L3_MANAGER
    assert len(stored.escalation_history) == 1
    with pytest.raises(ValueError, match="top"):
        await new_manager.escalate_alert(alert.alert_id)


async def test_alerts_agree_with_sla_monitor(audit_pool: asyncpg.Pool) -> None:
    """Alert figures match services.compliance.sla.SLAMonitor for random incidents."""
    clock = ManualClock(T0)
    monitor = await _replica(audit_pool, clock)
    sla = SLAMonitor()
    rng = random.Random(3)
    for n in range(60):
        priority = rng.randint(1, 5)
        dispatched = clock() - timedelta(minutes=rng.uniform(0, 200))
        alerts = await monitor.check_incident(f"i{n}", "org1", priority, dispatched)
        status = sla.evaluate(f"i{n}", priority, dispatched, clock())
        rules = {x.rule_id for x in alerts}
        assert ("breach" in rules) is status.breached
        assert ("warn" in rules) is (status.remaining_pct <= 25)
        for alert in alerts:
            assert alert.metadata["remaining_pct"] == pytest.approx(status.remaining_pct, abs=1e-3)
            if alert.rule_id == "breach":
                assert alert.metadata["violation"]["breach_magnitude"] == pytest.approx(
                    status.breach_magnitude
                )


async def test_state_reloads_after_restart(audit_pool: asyncpg.Pool) -> None:
    """Active incidents, suppressions and open alerts are stored; a new monitor picks them up
    and an arrival resolves the stored alerts as system."""
    clock = ManualClock(T0)
    first = await _replica(audit_pool, clock)
    await first.on_incident_event(
        "org1", "i1", 4, "dispatched", clock() - timedelta(minutes=20), "north"
    )
    sid = await first.suppressions.add("org1", "other-.*", 60, "maintenance", "ops")
    assert len(await first.run_cycle()) == 2
    second = await _replica(audit_pool, clock)
    assert second.incidents.get(("org1", "i1")) is not None
    assert second.suppressions.is_suppressed("org1", "other-rule")
    assert await second.run_cycle() == []  # already open: nothing new
    changed = await second.on_incident_event("org1", "i1", 4, "arrived", clock())
    assert {(x.status, x.resolved_by) for x in changed} == {(AlertStatus.RESOLVED, "system")}
    assert await audit_pool.fetchval("SELECT count(*) FROM alert_incidents") == 0
    assert await second.suppressions.remove(sid, actor="ops") is True
    assert await second.delete_rule("warn") is True
    await first.refresh()
    assert [r.rule_id for r in first.get_rules()] == ["breach"]
    assert not first.suppressions.is_suppressed("org1", "other-rule")
    assert (await second.audit.verify_chain()).ok


@pytest.mark.redis
async def test_redis_hot_state_shared_by_replicas(
    audit_pool: asyncpg.Pool, redis_url: str, redis_prefix: str
) -> None:
    """With Redis, a cool-down set by one replica and a suppression added or removed by one
    are seen by the other at once."""
    client = aioredis.from_url(redis_url)
    try:
        clock = ManualClock(T0)
        a = await _replica(audit_pool, clock, hot=RedisHotState(client, prefix=redis_prefix))
        b = await _replica(audit_pool, clock, hot=RedisHotState(client, prefix=redis_prefix))
        late = clock() - timedelta(minutes=9)
        alert = next(
            x for x in await a.check_incident("i1", "org1", 5, late) if x.rule_id == "breach"
        )
        await a.resolve_alert(alert.alert_id, "ann", "done")
        b._open_keys.discard(("org1", "breach", "i1"))  # b never saw the alert
        assert await b._cooling(("org1", "breach", "i1"), clock().timestamp())
        assert await b.check_incident("i1", "org1", 5, late) == []
        sid = await a.suppressions.add("org1", "warn|breach", 30, "drill", "ops")
        assert await b.suppressions.is_suppressed_shared("org1", "warn")
        alerts = await b.check_incident("i2", "org1", 5, late)
        assert {x.status for x in alerts} == {AlertStatus.SUPPRESSED}
        assert await a.suppressions.remove(sid) is True
        assert not await b.suppressions.is_suppressed_shared("org1", "warn")
        clock.advance(31)
        await a.suppressions.add("org1", "zzz", 1, "short", "ops")
        clock.advance(2)
        assert not await b.suppressions.is_suppressed_shared("org1", "zzz")
    finally:
        keys = [k async for k in client.scan_iter(f"{redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

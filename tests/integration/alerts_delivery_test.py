"""No alert change or notification lost or doubled, whatever fails (real NATS, PostgreSQL).

- Alert state changes go through a transactional outbox: with JetStream unable to take them
  (no ALERTS stream: every publish fails for real), nothing is lost; once it can, each change is
  on the stream exactly once (counted by ``Nats-Msg-Id``), even with two replicas flushing and a
  change re-published after a "crash" between ack and removal.
- A notification claimed by a replica that died before sending is re-sent once, by one of the
  live replicas, to a real local webhook receiver, with the same Idempotency-Key; failed sends
  are retried with back-off up to a limit, every round audited.
- A notification is owed from the transaction that stores its alert change (an intent row):
  a claim failing because the database went away is retried until it answers, and an intent
  left unclaimed by a notifier that died is sent once by another replica's sweep; a change
  that is not stored (open or cooling key, stale transition, failed audit) owes nothing.
- A policy transition delivered twice (to two replicas at once, or after a restart) changes the
  org's alert once.
- Two replicas sharing the incident events make the same ``pattern``/``threshold`` decisions
  as one monitor that sees them all.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from ionveil.errors import ValidationError
from services.alerts import (
    AlertRule,
    AlertSeverity,
    AlertStatus,
    AlertStore,
    Change,
    InMemoryAlertStore,
    PostgresAlertStore,
    SLAMonitorService,
    StaleTransitionError,
)
from services.alerts._serde import alert_to_dict
from services.alerts.models import META_SEQ, META_SUBJECT, Alert
from services.alerts.store import NotificationClaim
from services.audit import AuditLogger, InMemoryAuditStore, PostgresAuditStore
from services.notifications import ChannelRegistry, WebhookChannel
from tests.support import ManualClock
from workers.codec import encode_payload

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


@dataclass
class Hooks:
    """A real local webhook server: ``/hook`` records, ``/slow`` never answers in time,
    ``/flaky`` answers 503 to its first ``fail_first`` requests."""

    base: str
    keys: list[str] = field(default_factory=list)
    flaky_keys: list[str] = field(default_factory=list)
    slow_hits: int = 0
    fail_first: int = 0

    async def wait(self, check: Any, timeout_s: float = 10.0) -> None:
        """Poll ``check()`` until true (fails the test after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.02)


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    """The webhook server on a free port."""
    box: list[Hooks] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        box[0].keys.append(request.headers.get("Idempotency-Key", ""))
        return web.json_response({"ok": True})

    async def slow(request: web.Request) -> web.Response:
        box[0].slow_hits += 1
        await asyncio.sleep(30)
        return web.json_response({"ok": True})

    async def flaky(request: web.Request) -> web.Response:
        box[0].flaky_keys.append(request.headers.get("Idempotency-Key", ""))
        if len(box[0].flaky_keys) <= box[0].fail_first:
            return web.json_response({"ok": False}, status=503)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/slow", slow)
    app.router.add_post("/flaky", flaky)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    box.append(Hooks(f"http://127.0.0.1:{port}"))
    yield box[0]
    await runner.cleanup()


_REGISTRIES: list[ChannelRegistry] = []


@pytest.fixture(autouse=True)
async def _close_registries() -> AsyncIterator[None]:
    """Close the webhook channels a test's replicas opened."""
    yield
    while _REGISTRIES:
        await _REGISTRIES.pop().close()


BREACH = AlertRule("breach", "Breach", "", "sla_breach", {}, AlertSeverity.CRITICAL, ["hook"])


async def _replica(
    pool: asyncpg.Pool,
    clock: ManualClock,
    *,
    url: str | None = None,
    publisher: Any = None,
    name: str = "r",
    store_cls: type[PostgresAlertStore] = PostgresAlertStore,
) -> SLAMonitorService:
    channels = None
    if url is not None:
        channels = ChannelRegistry()
        channels.register("hook", WebhookChannel(url, name="hook", max_attempts=1, timeout_s=2))
        _REGISTRIES.append(channels)
    store = store_cls(pool, AuditLogger(PostgresAuditStore(pool)))
    monitor = SLAMonitorService(
        store=store, clock=clock, channels=channels, publisher=publisher, replica_id=name
    )
    await monitor.load_state()
    await monitor.save_rule(BREACH)
    return monitor


def _js_publisher(nc: NATS) -> Any:
    js = nc.jetstream()

    async def publish(alert: Alert) -> None:
        await js.publish(
            f"ionveil.alerts.{alert.org_id}.{alert.severity.value}",
            encode_payload(alert_to_dict(alert)),
            headers={"Nats-Msg-Id": f"{alert.alert_id}-{alert.seq}"},
            timeout=1,
        )

    return publish


async def _stream_msg_ids(nc: NATS) -> Counter[str]:
    js = nc.jetstream()
    info = await js.stream_info("ALERTS")
    sub = await js.pull_subscribe("ionveil.alerts.>", durable=None, stream="ALERTS")
    ids: Counter[str] = Counter()
    try:
        while sum(ids.values()) < info.state.messages:
            for msg in await sub.fetch(info.state.messages - sum(ids.values()), timeout=2):
                ids[(msg.headers or {}).get("Nats-Msg-Id", "")] += 1
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return ids


async def test_publish_failure_then_recovery_publishes_every_change_once(
    nc: NATS, audit_pool: asyncpg.Pool
) -> None:
    """JetStream refusing every publish loses nothing: the changes wait in the outbox (seen by
    lag_s), then two replicas flushing together put each on the stream exactly once; a row
    re-published after a 'crash' before its removal is dropped by the duplicate window."""
    clock = ManualClock(T0)
    publish = _js_publisher(nc)
    a = await _replica(audit_pool, clock, publisher=publish, name="a")
    b = await _replica(audit_pool, clock, publisher=publish, name="b")
    late = clock() - timedelta(minutes=9)
    raised = [x for n in range(6) for x in await a.check_incident(f"i{n}", "org1", 5, late)]
    await b.acknowledge_alert(raised[0].alert_id, "ann")
    await a.resolve_alert(raised[1].alert_id, "ann", "done")
    await b.resolve_alert(raised[0].alert_id, "bob", "done")
    expected = {
        f"{r['alert_id']}-{seq}"
        for r in await audit_pool.fetch("SELECT alert_id, seq FROM alerts")
        for seq in range(1, r["seq"] + 1)
    }
    assert len(expected) == 9
    assert await a.store.outbox_size() == 9  # type: ignore[attr-defined]
    assert a.outbox.failing_since is not None and b.outbox.failing_since is not None
    assert await a.flush_outbox() == 0  # still no stream: nothing published, nothing lost
    assert (await b.outbox.lag_s() or 0.0) >= 0.0

    await nc.jetstream().add_stream(
        StreamConfig(name="ALERTS", subjects=["ionveil.alerts.>"], duplicate_window=120)
    )
    flushed = await asyncio.gather(a.flush_outbox(), b.flush_outbox())
    assert sum(flushed) == 9 and a.outbox.failing_since is None
    assert await a.outbox.lag_s() is None
    await a.acknowledge_alert(raised[2].alert_id, "cy")  # fast path, straight after commit
    assert await a.store.outbox_size() == 0  # type: ignore[attr-defined]
    expected.add(f"{raised[2].alert_id}-2")

    # a crash after JetStream acked but before the row was removed: the row is published again
    row = await audit_pool.fetchrow(
        "SELECT data FROM alerts WHERE alert_id = $1", raised[2].alert_id
    )
    await audit_pool.execute(
        "INSERT INTO alert_outbox (alert_id, seq, payload) VALUES ($1, 2, $2)",
        raised[2].alert_id,
        row["data"],
    )
    assert await b.flush_outbox() == 1
    ids = await _stream_msg_ids(nc)
    assert set(ids) == expected and set(ids.values()) == {1}


async def test_claim_of_a_dead_replica_is_resent_once(
    audit_pool: asyncpg.Pool, hooks: Hooks
) -> None:
    """A claim left by a replica that died before sending (one cancelled mid-send, one whose
    lease simply expired) is re-sent exactly once by the live replicas, with the same
    Idempotency-Key, and recorded under the new claimant."""
    clock = ManualClock(T0)
    dead = await _replica(audit_pool, clock, url=f"{hooks.base}/slow", name="dead")
    a = await _replica(audit_pool, clock, url=f"{hooks.base}/hook", name="a")
    b = await _replica(audit_pool, clock, url=f"{hooks.base}/hook", name="b")
    (first,) = await dead.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
    await hooks.wait(lambda: hooks.slow_hits == 1)
    await dead.notifier.drain(timeout_s=0.05)  # killed between claim and a finished send
    # a second claim by a replica that crashed before sending anything, long ago
    second = (await a.store.list_alerts("org1"))[0]
    second.metadata["seq"] = 7  # another change of the alert
    assert await a.store.claim_notification(second, "hook", "escalated", "gone") is not None
    await audit_pool.execute(
        "UPDATE notifications_sent SET claimed_at = now() - interval '120 seconds' "
        "WHERE claimed_by = 'gone'"
    )
    assert (await asyncio.gather(a.notifier.sweep(), b.notifier.sweep())) in ([1, 0], [0, 1])
    for m in (a, b):
        m.notifier.lease_s = 0.3
    await asyncio.sleep(0.4)
    started = await asyncio.gather(a.run_cycle(), b.run_cycle(), a.notifier.sweep())
    assert started[0] == [] and started[1] == []
    await hooks.wait(lambda: len(hooks.keys) == 2)
    await a.notifier.drain()
    await b.notifier.drain()
    await asyncio.sleep(0.5)  # leases long expired: a sweep must find nothing left
    assert await a.notifier.sweep() + await b.notifier.sweep() == 0
    assert sorted(hooks.keys) == sorted([f"{first.alert_id}:1:hook", f"{second.alert_id}:7:hook"])
    rows = await audit_pool.fetch("SELECT ok, rounds, claimed_by FROM notifications_sent")
    assert {(r["ok"], r["rounds"]) for r in rows} == {(True, 1)}
    assert {r["claimed_by"] for r in rows} <= {"a", "b"}
    sent = await a.audit.query(action="notification.sent", limit=10)
    assert len(sent) == 2


@pytest.mark.parametrize(("fail_first", "ok", "rounds"), [(2, True, 3), (10, False, 3)])
async def test_failed_sends_retry_with_backoff_up_to_a_limit(
    audit_pool: asyncpg.Pool, hooks: Hooks, fail_first: int, ok: bool, rounds: int
) -> None:
    """A failed send is retried after its back-off, up to 1 + len(retry_backoff_s) rounds;
    every round is audited; the same Idempotency-Key each time."""
    clock = ManualClock(T0)
    hooks.fail_first = fail_first
    m = await _replica(audit_pool, clock, url=f"{hooks.base}/flaky", name="m")
    m.notifier.retry_backoff_s = (0.05, 0.05)
    (alert,) = await m.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
    await m.notifier.drain()

    async def settled() -> bool:
        await m.notifier.sweep()
        await m.notifier.drain()
        row = await audit_pool.fetchrow("SELECT ok, retry_at FROM notifications_sent")
        return row["ok"] is not None and row["retry_at"] is None

    async with asyncio.timeout(10):
        while not await settled():
            await asyncio.sleep(0.06)
    row = await audit_pool.fetchrow("SELECT ok, rounds, attempts FROM notifications_sent")
    assert (row["ok"], row["rounds"], row["attempts"]) == (ok, rounds, rounds)
    assert hooks.flaky_keys == [f"{alert.alert_id}:1:hook"] * rounds
    audited = [
        r.action
        for r in await m.audit.for_entity("alert", alert.alert_id)
        if r.action.startswith("notification.")
    ]
    assert audited.count("notification.failed") == (rounds - 1 if ok else rounds)
    assert len(audited) == rounds
    await asyncio.sleep(0.1)
    assert await m.notifier.sweep() == 0


class _DatabaseAwayForClaims(PostgresAlertStore):
    """The real store, except that the database 'goes away' for the first ``fail`` claims
    (after the alert change and its intents were committed); notes whether the intent was
    there, unclaimed, at each failure."""

    def __init__(self, pool: asyncpg.Pool, audit: AuditLogger) -> None:
        super().__init__(pool, audit)
        self.fail = 3
        self.owed_at_failure: list[bool] = []

    async def claim_notification(
        self, alert: Alert, channel: str, kind: str, claimant: str
    ) -> NotificationClaim | None:
        if self.fail > 0:
            self.fail -= 1
            self.owed_at_failure.append(
                await self._pool.fetchval(
                    "SELECT claimed_by IS NULL FROM notifications_sent "
                    "WHERE alert_id = $1 AND seq = $2 AND channel = $3",
                    alert.alert_id,
                    alert.seq,
                    channel,
                )
            )
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        return await super().claim_notification(alert, channel, kind, claimant)


async def test_claim_failing_while_the_database_is_away_is_retried(
    audit_pool: asyncpg.Pool, hooks: Hooks
) -> None:
    """The alert and its intent are committed, then the claim fails three times (the database
    went away): the notifier retries with capped back-off and sends it once."""
    clock = ManualClock(T0)
    m = await _replica(
        audit_pool, clock, url=f"{hooks.base}/hook", name="m", store_cls=_DatabaseAwayForClaims
    )
    m.notifier.claim_backoff_s = (0.05, 0.1)
    (alert,) = await m.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
    await hooks.wait(lambda: len(hooks.keys) == 1)
    await m.notifier.drain()
    assert m.store.owed_at_failure == [True, True, True]  # type: ignore[attr-defined]
    assert hooks.keys == [f"{alert.alert_id}:1:hook"]
    row = await audit_pool.fetchrow("SELECT ok, rounds, claimed_by FROM notifications_sent")
    assert (row["ok"], row["rounds"], row["claimed_by"]) == (True, 1, "m")
    assert await m.notifier.sweep() == 0


async def test_intent_of_a_notifier_that_died_is_sent_once_by_a_sweep(
    audit_pool: asyncpg.Pool, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica died right after committing an alert (nothing claimed): once the intent's
    grace is over, one of two live replicas sweeping together sends it, once."""
    clock = ManualClock(T0)
    dead = await _replica(audit_pool, clock, url=f"{hooks.base}/hook", name="dead")
    a = await _replica(audit_pool, clock, url=f"{hooks.base}/hook", name="a")
    b = await _replica(audit_pool, clock, url=f"{hooks.base}/hook", name="b")
    monkeypatch.setattr(dead.notifier, "dispatch", lambda *args: None)
    (alert,) = await dead.check_incident("i1", "org1", 5, clock() - timedelta(minutes=9))
    for m in (a, b):
        m.notifier.intent_grace_s = 0.5
    assert await a.notifier.sweep() + await b.notifier.sweep() == 0  # still the writer's
    assert [r["claimed_by"] for r in await a.store.deliveries()] == [None]  # type: ignore[attr-defined]
    await asyncio.sleep(0.6)
    assert sorted(await asyncio.gather(a.notifier.sweep(), b.notifier.sweep())) == [0, 1]
    await hooks.wait(lambda: len(hooks.keys) == 1)
    await a.notifier.drain()
    await b.notifier.drain()
    assert await dead.store.claim_notification(alert, "hook", "opened", "dead") is None
    assert await a.notifier.sweep() + await b.notifier.sweep() == 0
    assert hooks.keys == [f"{alert.alert_id}:1:hook"]
    row = await audit_pool.fetchrow("SELECT ok, rounds, claimed_by FROM notifications_sent")
    assert (row["ok"], row["rounds"]) == (True, 1) and row["claimed_by"] in {"a", "b"}


def _alert(alert_id: str, subject: str, seq: int = 1) -> Alert:
    return Alert(
        alert_id,
        "breach",
        "org1",
        subject,
        AlertSeverity.CRITICAL,
        AlertStatus.OPEN,
        "t",
        "d",
        T0,
        T0,
        metadata={META_SEQ: seq, META_SUBJECT: subject},
    )


def _next(alert: Alert, **changes: Any) -> Alert:
    """``alert`` one change later."""
    return replace(alert, **changes, metadata={**alert.metadata, META_SEQ: alert.seq + 1})


@pytest.fixture(params=["memory", "postgres"])
def any_store(request: pytest.FixtureRequest) -> AlertStore:
    """Each store: in this process, and on PostgreSQL (a fresh schema)."""
    if request.param == "memory":
        return InMemoryAlertStore(AuditLogger(InMemoryAuditStore()))
    pool = request.getfixturevalue("audit_pool")
    return PostgresAlertStore(pool, AuditLogger(PostgresAuditStore(pool)))


async def test_intents_are_written_with_the_change_or_not_at_all(any_store: AlertStore) -> None:
    """Both stores: ``notify=`` writes one intent per channel in the change's transaction; an
    insert refused ("open", "cooling", a stale transition) or failing (its audit record), and
    an update refused (stale sequence, stale transition) or failing, leave no intent."""
    store = any_store
    await store.migrate()
    ok, bad = Change("system", "alert.x", T0), Change("system", "x", T0, after={"n": float("nan")})
    opened = ("opened", ["hook", "mail", "hook"])
    first = _alert("a1", "i1")
    assert await store.insert_alert(first, ok, cooldown_since=None, notify=opened) == "inserted"
    second = _alert("a2", "i1")
    assert await store.insert_alert(second, ok, cooldown_since=None, notify=opened) == "open"
    resolved = _next(first, status=AlertStatus.RESOLVED, resolved_at=T0)
    assert await store.update_alert(resolved, ok, expected_seq=1)
    since = T0 - timedelta(minutes=5)
    third = _alert("a3", "i1")
    assert await store.insert_alert(third, ok, cooldown_since=since, notify=opened) == "cooling"
    assert await store.claim_policy_seq("org1", 5)
    with pytest.raises(StaleTransitionError):
        await store.insert_alert(
            _alert("a4", "i4"), ok, cooldown_since=None, policy_seq=("org1", 5), notify=opened
        )
    with pytest.raises(ValidationError):
        await store.insert_alert(_alert("a5", "i5"), bad, cooldown_since=None, notify=opened)
    assert await store.get_alert("a5") is None and await store.get_alert("a4") is None

    other = _alert("b1", "i9")
    assert await store.insert_alert(other, ok, cooldown_since=None)  # nothing owed
    escalated = ("escalated", ["pager"])
    up = _next(other, status=AlertStatus.ESCALATED)
    assert not await store.update_alert(up, ok, expected_seq=7, notify=escalated)
    with pytest.raises(StaleTransitionError):
        await store.update_alert(up, ok, expected_seq=1, policy_seq=("org1", 4), notify=escalated)
    with pytest.raises(ValidationError):
        await store.update_alert(up, bad, expected_seq=1, notify=escalated)
    assert await store.update_alert(up, ok, expected_seq=1, notify=escalated)

    # the dispatcher takes its intent, once; a sweep takes the others, once
    claim = await store.claim_notification(first, "hook", "opened", "x")
    assert claim is not None and claim.round == 0
    assert await store.claim_notification(first, "hook", "opened", "y") is None
    swept = await store.reclaim_notifications("z", lease_s=3600, intent_grace_s=0.0)
    assert sorted((c.alert.alert_id, c.alert.seq, c.channel, c.kind) for c in swept) == [
        ("a1", 1, "mail", "opened"),
        ("b1", 2, "pager", "escalated"),
    ]
    assert await store.reclaim_notifications("z", lease_s=3600, intent_grace_s=0.0) == []
    assert await store.claim_notification(up, "pager", "escalated", "late") is None


async def test_duplicate_policy_transition_is_a_no_op(audit_pool: asyncpg.Pool) -> None:
    """The same transition handed to two replicas at once, to another replica later, or to a
    restarted one after the alert moved on, changes the org's policy alert once."""
    clock = ManualClock(T0)
    a = await _replica(audit_pool, clock, name="a")
    b = await _replica(audit_pool, clock, name="b")

    def move(seq: int, to: str) -> dict[str, Any]:
        return {"from": "x", "to": to, "sequence": seq, "timestamp": T0.isoformat()}

    first = await a.on_policy_transition("org1", move(1, "restricted"))
    assert first is not None and first.severity is AlertSeverity.CRITICAL
    assert await b.on_policy_transition("org1", move(1, "restricted")) is None
    both = await asyncio.gather(
        a.on_policy_transition("org1", move(2, "halted")),
        b.on_policy_transition("org1", move(2, "halted")),
    )
    assert sum(x is not None for x in both) == 1
    done = await b.on_policy_transition("org1", move(3, "normal"))
    assert done is not None and done.resolved_by == "system"
    restarted = await _replica(audit_pool, clock, name="a2")
    for seq, to in ((2, "halted"), (1, "restricted"), (3, "normal")):
        assert await restarted.on_policy_transition("org1", move(seq, to)) is None
    alerts = await restarted.get_active_alerts("org1", status=None)
    assert alerts == []  # not re-opened by the redelivered 'halted'
    changes = await audit_pool.fetchval(
        "SELECT count(*) FROM alert_outbox WHERE alert_id = $1", first.alert_id
    )
    assert changes == 3  # opened, severity update, resolved: nothing more
    assert await audit_pool.fetchval("SELECT count(*) FROM alerts") == 1
    assert await restarted.store.policy_seq("org1") == 3


Op = tuple[Any, ...]
_ORG_RULES = [
    AlertRule(
        "streak",
        "Streak",
        "",
        "pattern",
        {"consecutive_breaches": 3},
        AlertSeverity.WARNING,
        ["hook"],
    ),
    AlertRule(
        "region-streak",
        "Region streak",
        "",
        "pattern",
        {"consecutive_breaches": 2, "scope": "region"},
        AlertSeverity.WARNING,
        ["hook"],
    ),
    AlertRule(
        "rate",
        "Compliance",
        "",
        "threshold",
        {"metric": "compliance_rate", "min": 0.5},
        AlertSeverity.CRITICAL,
        ["hook"],
    ),
]


def _script() -> list[Op]:
    """Incident events (replica index, id, status, minutes ago, region), cycles, clock moves."""
    return [
        ("event", 0, "i1", "dispatched", 20, "north"),
        ("event", 1, "i2", "dispatched", 20, "north"),
        ("event", 0, "i3", "dispatched", 20, "south"),
        ("event", 1, "i1", "arrived", 0, None),
        ("event", 0, "i2", "arrived", 0, None),
        ("event", 1, "i3", "arrived", 0, None),
        ("event", 0, "i4", "dispatched", 2, "north"),
        ("event", 1, "i4", "arrived", 0, None),
        ("event", 0, "i5", "dispatched", 1, "south"),
        ("event", 1, "i6", "dispatched", 20, "south"),
        ("cycle",),
        ("event", 0, "i5", "arrived", 0, None),
        ("event", 1, "i6", "arrived", 0, None),
        ("advance", 10),
        ("cycle",),
        ("event", 1, "i7", "dispatched", 20, "north"),
        ("cycle",),
        ("event", 0, "i8", "dispatched", 20, "north"),
        ("event", 0, "i9", "dispatched", 20, "north"),
        ("cycle",),
        ("advance", 61),
        ("cycle",),
    ]


async def _state(monitor: SLAMonitorService) -> set[tuple[str, str, str]]:
    alerts = await monitor.store.list_alerts(None, active_only=False)
    return {(a.rule_id, a.subject_key, a.status.value) for a in alerts}


async def test_two_replicas_decide_org_rules_as_one(audit_pool: asyncpg.Pool) -> None:
    """Incident events split between two replicas (each seeing half of them) produce, after
    every step, the same pattern/threshold alerts as one monitor seeing all of them."""
    clock = ManualClock(T0)
    one = SLAMonitorService(clock=clock)
    pair = [await _replica(audit_pool, clock, name=n) for n in ("a", "b")]
    for rule in _ORG_RULES:
        one.add_rule(rule)
        await pair[0].save_rule(rule)
    for m in (one, *pair):
        m.remove_rule("breach")
    await pair[0].delete_rule("breach")
    await pair[1].refresh()
    seen: set[tuple[str, str, str]] = set()
    for op in _script():
        if op[0] == "event":
            _, who, incident, status, minutes_ago, region = op
            args = ("org1", incident, 5, status, clock() - timedelta(minutes=minutes_ago), region)
            await one.on_incident_event(*args)
            await pair[who].on_incident_event(*args)
        elif op[0] == "cycle":
            await one.run_cycle()
            for m in pair:
                await m.run_cycle()
        else:
            clock.advance(op[1])
        expected = await _state(one)
        assert await _state(pair[0]) == expected, op
        seen |= expected
    assert {rule for rule, _, _ in seen} == {"streak", "region-streak", "rate"}
    assert ("streak", "org", "resolved") in seen and ("rate", "org", "resolved") in seen

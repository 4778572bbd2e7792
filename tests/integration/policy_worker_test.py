"""The live policy worker on real NATS and PostgreSQL.

Dispatch events with SLA misses escalate an org and the transition is published; a restarted
worker continues from the stored state; an event delivered twice counts once; bad events are
dead-lettered; the state and configure endpoints answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.policy import OutboxEntry, PostgresPolicyStore
from workers.codec import decode_payload, encode_payload
from workers.policy import PolicyWorker
from workers.runtime import run_worker
from workers.settings import Settings

_ids = itertools.count(1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(org: str, met: bool, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    n = next(_ids)
    return {
        "event_id": event_id or f"ev-{n}",
        "org_id": org,
        "dispatch_id": f"d-{n}",
        "timestamp": (T0 + timedelta(seconds=n)).isoformat(),
        "severity": 3,
        "response_time_minutes": 12.0 if met else 45.0,
        "distance_km": 4.2,
        "region": "north",
        "unit_type": "ambulance",
        "sla_met": met,
        "metadata": {"lat": 51.5, "lon": -0.1},
        **extra,
    }


async def _publish(nc: NATS, org: str, payload: Any, msg_id: str | None = None) -> None:
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await nc.jetstream().publish(
        f"ionveil.dispatch.events.{org}", encode_payload(payload), headers=headers
    )


async def _transitions(nc: NATS, expected: int, timeout_s: float = 10.0) -> list[Any]:
    """The first ``expected`` messages of the POLICY stream (waits for them)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "ionveil.policy.transitions.>",
        durable=None,
        stream="POLICY",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    out: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while len(out) < expected and asyncio.get_running_loop().time() < deadline:
            try:
                out += await sub.fetch(expected - len(out), timeout=1)
            except TimeoutError:
                continue
    finally:
        await sub.unsubscribe()
    return out


async def _request(nc: NATS, subject: str, payload: dict[str, Any]) -> tuple[Any, dict]:
    reply = await nc.request(subject, encode_payload(payload), timeout=10)
    value, _ = decode_payload(reply.data, reply.headers)
    return value, reply.headers or {}


async def test_misses_escalate_and_the_transition_is_published(
    nc: NATS, settings: Settings
) -> None:
    """Three misses move metro to watch: one message on ionveil.policy.transitions.metro."""
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        for met in (False, True, False, False, False):
            await _publish(nc, "metro", _event("metro", met))
        await _publish(nc, "county", [_event("county", False), _event("county", True)])
        await handle.wait_idle()
        msgs = await _transitions(nc, 1)
    assert len(msgs) == 1
    msg = msgs[0]
    body, _ = decode_payload(msg.data, msg.headers)
    assert msg.subject == "ionveil.policy.transitions.metro"
    assert msg.headers["Nats-Msg-Id"] == "metro-5"
    assert (body["org_id"], body["from"], body["to"], body["sequence"]) == (
        "metro",
        "normal",
        "watch",
        5,
    )
    assert body["reason"].startswith("escalated")


async def test_restarted_worker_continues_from_the_stored_state(
    nc: NATS, settings: Settings
) -> None:
    """Two misses before a restart and one after make the third consecutive miss."""
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        await _publish(nc, "metro", [_event("metro", False), _event("metro", False)])
        await handle.wait_idle()
        state, _ = await _request(nc, "ionveil.api.policy.metro.state", {})
        assert state["failure_burst"] == 2 and state["policy"] == "normal"
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        await _publish(nc, "metro", _event("metro", False))
        await handle.wait_idle()
        state, _ = await _request(nc, "ionveil.api.policy.metro.state", {"limit": 5})
        msgs = await _transitions(nc, 1)
    assert state["policy"] == "watch" and state["outcomes_recorded"] == 3
    assert [t["to"] for t in state["transitions"]] == ["watch"]
    assert len(msgs) == 1


async def test_the_same_event_delivered_twice_counts_once(nc: NATS, settings: Settings) -> None:
    """An event published again under another message id (and inside an array) counts once."""
    event = _event("metro", False, event_id="dup-1")
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        await _publish(nc, "metro", event, msg_id="a")
        await _publish(nc, "metro", event, msg_id="b")
        await _publish(nc, "metro", [event, event], msg_id="c")
        await handle.wait_idle()
        state, _ = await _request(nc, "ionveil.api.policy.metro.state", {})
    assert state["outcomes_recorded"] == 1 and state["failure_burst"] == 1


@pytest.mark.parametrize(
    ("subject_org", "payload", "reason"),
    [
        ("metro", _event("county", False), "org_id"),
        ("metro", [_event("metro", True), _event("county", False)], "[1].org_id"),
        ("metro", {"event_id": "x", "timestamp": "2026-01-01T00:00:00Z"}, "sla_met"),
        ("metro", {"event_id": "x", "sla_met": "yes", "timestamp": 1.0}, "sla_met"),
        ("metro", {"event_id": "x", "sla_met": True, "timestamp": "tomorrow"}, "timestamp"),
        ("metro", [], "list"),
        ("metro.extra", _event("metro", False), "subject"),
    ],
)
async def test_bad_events_are_dead_lettered_and_the_rest_is_applied(
    nc: NATS, settings: Settings, subject_org: str, payload: Any, reason: str
) -> None:
    """A bad event goes to ionveil.dlq.<subject> with the reason; good events still count."""
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        await _publish(nc, subject_org, payload)
        await _publish(nc, "metro", _event("metro", True))
        await handle.wait_idle()
        state, _ = await _request(nc, "ionveil.api.policy.metro.state", {})
        sub = await nc.jetstream().pull_subscribe("ionveil.dlq.>", durable=None, stream="DLQ")
        dead = await sub.fetch(1, timeout=5)
        await sub.unsubscribe()
    assert state["outcomes_recorded"] == 1
    assert dead[0].subject == f"ionveil.dlq.ionveil.dispatch.events.{subject_org}"
    assert reason in json.dumps(dict(dead[0].headers))


async def test_configure_endpoint_sets_and_validates_the_org_config(
    nc: NATS, settings: Settings
) -> None:
    """configure stores a per-org config (JSON request answered in JSON); bad config is a 400."""
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        reply = await nc.request(
            "ionveil.api.policy.metro.configure",
            json.dumps({"escalation_threshold": 1}).encode(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        state = json.loads(reply.data)
        assert state["config"]["escalation_threshold"] == 1
        await _publish(nc, "metro", _event("metro", False))
        await handle.wait_idle()
        after, _ = await _request(nc, "ionveil.api.policy.metro.state", {})
        error, headers = await _request(
            nc, "ionveil.api.policy.metro.configure", {"escalation_threshold": 0}
        )
        bad_limit, _ = await _request(nc, "ionveil.api.policy.metro.state", {"limit": -1})
        other, _ = await _request(nc, "ionveil.api.policy.county.state", {})
        long_org, _ = await _request(nc, f"ionveil.api.policy.{'x' * 200}.state", {})
    assert after["policy"] == "watch"
    assert error["error"]["code"] == "invalid"
    assert "escalation_threshold" in error["error"]["message"]
    assert headers.get("Nats-Service-Error-Code") == "400"
    assert "limit" in bad_limit["error"]["message"]
    assert other["config"]["escalation_threshold"] == 3 and other["policy"] == "normal"
    assert "org" in long_org["error"]["message"]


async def test_transition_left_in_the_outbox_is_published_at_start(
    nc: NATS, settings: Settings, core_pool: asyncpg.Pool
) -> None:
    """A transition committed but not published before a crash is published by the next run."""
    store = PostgresPolicyStore(core_pool)
    await store.migrate()
    payload = {"org_id": "metro", "from": "normal", "to": "watch", "sequence": 7}
    async with core_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO policy_outbox (org_id, sequence, payload) VALUES ($1, $2, $3::jsonb)",
            "metro",
            7,
            json.dumps(payload),
        )
    async with run_worker(PolicyWorker(), settings, http_port=0):
        msgs = await _transitions(nc, 1)
        # Published again (a second replica, a crash before the delete): stored once.
        await nc.jetstream().publish(
            "ionveil.policy.transitions.metro",
            encode_payload(payload),
            headers={"Nats-Msg-Id": OutboxEntry("metro", 7, payload).msg_id},
        )
        info = await nc.jetstream().stream_info("POLICY")
    assert msgs[0].headers["Nats-Msg-Id"] == "metro-7"
    assert info.state.messages == 1
    assert await store.pending() == []


async def test_health_is_ok_when_running(nc: NATS, settings: Settings) -> None:
    """/health answers 200 while NATS and the core database are reachable."""
    import aiohttp

    async with (
        run_worker(PolicyWorker(), settings, http_port=0) as handle,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{handle.http_port}/health") as resp,
    ):
        assert resp.status == 200
        assert await handle.worker.health() is None


async def test_unpublishable_transitions_stay_in_the_outbox_and_turn_health_red(
    infra: Any, settings: Settings
) -> None:
    """When NATS refuses the publish, the transition stays queued and, after a minute of
    failures, /health names the problem; a database error in a batch is transient."""
    import nats as nats_client

    from ionveil.errors import TransientError
    from services.policy import InMemoryPolicyStore, LiveOutcome, LivePolicyService
    from workers.policy import DispatchOutcome
    from workers.runtime import Envelope, WorkerContext, WorkerMetrics

    worker = PolicyWorker()
    with pytest.raises(TransientError):
        _ = worker.service
    closed = await nats_client.connect(infra.nats_url)
    await closed.close()
    service = LivePolicyService(InMemoryPolicyStore())
    await service.apply([LiveOutcome("metro", f"e{i}", i, 1.0 + i, False) for i in range(3)])
    worker._service = service
    worker._ctx = WorkerContext(
        settings, closed, closed.jetstream(), {}, None, WorkerMetrics("policy"), "test"
    )
    assert await worker.flush_outbox() == 0
    assert [e.msg_id for e in await service.pending()] == ["metro-3"]
    assert await worker.health() is None
    worker._outbox_failing_since = worker._outbox_failing_since - 120  # type: ignore[operator]
    assert "unpublished" in (await worker.health() or "")

    pool = await asyncpg.create_pool(settings.core_dsn, min_size=0, max_size=1)
    await pool.close()
    worker._service = LivePolicyService(PostgresPolicyStore(pool))
    event = DispatchOutcome(event_id="e", timestamp=T0, sla_met=True)
    envelope = Envelope("ionveil.dispatch.events.metro", "metro", event, {}, None, 1, 1)
    with pytest.raises(TransientError, match="core database"):
        await worker._on_events([envelope])

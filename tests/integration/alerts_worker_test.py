"""The alerts worker on real NATS, PostgreSQL and a real local webhook receiver.

An incident event published on NATS makes the worker raise an alert, publish it on
``ionveil.alerts.<org>.<severity>`` and POST it to the webhook; operators drive it through the
request-reply API; two worker replicas side by side notify once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from tests.integration.alerts_flow_test import Receiver
from tests.integration.alerts_flow_test import receiver as receiver  # the fixture
from workers.alerts import AlertsWorker
from workers.codec import decode_payload, encode_payload
from workers.runtime import run_worker
from workers.settings import Settings

RULE = {
    "rule_id": "p5-breach",
    "name": "P5 breach",
    "description": "critical incidents past target",
    "condition_type": "sla_breach",
    "threshold_config": {"priorities": [5]},
    "severity": "critical",
    "notification_channels": ["hook"],
}


async def _request(nc: NATS, subject: str, payload: dict[str, Any]) -> tuple[Any, dict]:
    reply = await nc.request(subject, encode_payload(payload), timeout=10)
    value, _ = decode_payload(reply.data, reply.headers)
    return value, reply.headers or {}


async def _incident(
    nc: NATS, org: str, incident_id: str, status: str, minutes_ago: float, priority: int = 5
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    await nc.jetstream().publish(
        f"ionveil.incidents.{org}",
        encode_payload(
            {
                "incident_id": incident_id,
                "priority": priority,
                "status": status,
                "timestamp": at.isoformat(),
                "region": "north",
            }
        ),
        headers={"Nats-Msg-Id": f"{incident_id}-{status}"},
    )


async def _alert_events(nc: NATS, count: int) -> list[tuple[str, dict[str, Any]]]:
    sub = await nc.jetstream().pull_subscribe("ionveil.alerts.>", durable=None)
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        async with asyncio.timeout(10):
            while len(out) < count:
                try:
                    msgs = await sub.fetch(count - len(out), timeout=1)
                except TimeoutError:
                    continue
                out += [(m.subject, decode_payload(m.data, m.headers)[0]) for m in msgs]
    finally:
        await sub.unsubscribe()
    return out


@pytest.fixture
def tuned(settings: Settings, receiver: Receiver, redis_prefix: str) -> Settings:
    """Settings with the webhook channel, a fast check loop and this test's Redis prefix."""
    return settings.model_copy(
        update={
            "alerts_channels": {"hook": receiver.url},
            "alerts_check_interval_s": 0.2,
            "alerts_redis_prefix": redis_prefix,
        }
    )


async def test_incident_on_nats_to_webhook_and_api(
    nc: NATS, tuned: Settings, receiver: Receiver
) -> None:
    """dispatched incident past its SLA -> alert published and POSTed; the API lists, gets,
    acknowledges, escalates and resolves it; other orgs cannot see it; errors are replies."""
    async with run_worker(AlertsWorker(), tuned, http_port=0):
        rule, _ = await _request(nc, "ionveil.api.alerts.rules.add", RULE)
        assert rule["rule_id"] == "p5-breach"
        bad, _ = await _request(
            nc, "ionveil.api.alerts.rules.add", {**RULE, "condition_type": "vibes"}
        )
        assert bad["error"]["code"] == "invalid" and "condition_type" in bad["error"]["message"]
        await _incident(nc, "org1", "inc-1", "dispatched", minutes_ago=10)
        await receiver.wait_for(1)
        body = receiver.bodies[0]
        assert body["severity"] == "critical" and body["metadata"]["incident_id"] == "inc-1"
        ((subject, event),) = await _alert_events(nc, 1)
        assert subject == "ionveil.alerts.org1.critical" and event["status"] == "open"
        active, _ = await _request(nc, "ionveil.api.alerts.org1.active", {})
        alert_id = active[0]["alert_id"]
        hidden, _ = await _request(nc, "ionveil.api.alerts.org2.get", {"alert_id": alert_id})
        assert hidden["error"]["code"] == "not_found"
        acked, _ = await _request(
            nc, "ionveil.api.alerts.org1.ack", {"alert_id": alert_id, "user": "ann"}
        )
        assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "ann"
        again, _ = await _request(
            nc, "ionveil.api.alerts.org1.ack", {"alert_id": alert_id, "user": "ann"}
        )
        assert again["error"]["code"] == "conflict"
        up, _ = await _request(
            nc,
            "ionveil.api.alerts.org1.escalate",
            {"alert_id": alert_id, "reason": "needs a supervisor"},
        )
        assert up["escalation_level"] == 2
        await _incident(nc, "org1", "inc-1", "arrived", minutes_ago=0)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            got, _ = await _request(nc, "ionveil.api.alerts.org1.get", {"alert_id": alert_id})
            if got["status"] == "resolved" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert (got["status"], got["resolved_by"]) == ("resolved", "system")
        listed, _ = await _request(nc, "ionveil.api.alerts.rules.list", {"org_id": "org1"})
        assert [r["rule_id"] for r in listed] == ["p5-breach"]
        removed, _ = await _request(nc, "ionveil.api.alerts.rules.remove", {"rule_id": "p5-breach"})
        assert removed == {"removed": True}


async def test_suppression_and_policy_endpoints(
    nc: NATS, tuned: Settings, receiver: Receiver
) -> None:
    """suppress/suppressions/unsuppress per org (RE2 errors are 400 replies), escalation
    policy per org, and a policy transition on NATS raising the org's policy alert."""
    async with run_worker(AlertsWorker(), tuned, http_port=0):
        bad, _ = await _request(
            nc,
            "ionveil.api.alerts.org1.suppress",
            {"rule_pattern": "(?<=x)y", "duration_minutes": 5, "reason": "r"},
        )
        assert bad["error"]["code"] == "invalid" and "rule_pattern" in bad["error"]["message"]
        made, _ = await _request(
            nc,
            "ionveil.api.alerts.org1.suppress",
            {"rule_pattern": "p5-.*", "duration_minutes": 5, "reason": "drill", "user": "ops"},
        )
        listed, _ = await _request(nc, "ionveil.api.alerts.org1.suppressions", {})
        assert [s["suppression_id"] for s in listed] == [made["suppression_id"]]
        other, _ = await _request(nc, "ionveil.api.alerts.org2.unsuppress", made)
        assert other == {"removed": False}
        gone, _ = await _request(nc, "ionveil.api.alerts.org1.unsuppress", made)
        assert gone == {"removed": True}
        policy = {
            "policy_id": "p",
            "name": "chain",
            "levels": [{"level": 1, "timeout_minutes": 5, "channels": ["hook"]}],
        }
        saved, _ = await _request(nc, "ionveil.api.alerts.org1.policy", {"policy": policy})
        assert saved == {"org_id": "org1", "policy_id": "p"}
        await nc.jetstream().publish(
            "ionveil.policy.transitions.org1",
            encode_payload(
                {
                    "from": "normal",
                    "to": "restricted",
                    "sequence": 1,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "reason": "misses",
                }
            ),
            headers={"Nats-Msg-Id": "org1-1"},
        )
        await receiver.wait_for(1)
        assert receiver.bodies[0]["severity"] == "critical"
        ((subject, event),) = await _alert_events(nc, 1)
        assert subject == "ionveil.alerts.org1.critical"
        assert event["rule_id"] == "policy-transition"


async def test_two_worker_replicas_notify_once(
    nc: NATS, tuned: Settings, receiver: Receiver
) -> None:
    """Two alerts workers side by side: each breached incident raises one alert and one
    webhook notification."""
    async with (
        run_worker(AlertsWorker(), tuned, http_port=0) as first,
        run_worker(AlertsWorker(), tuned, http_port=0),
    ):
        await _request(nc, "ionveil.api.alerts.rules.add", RULE)
        for n in range(6):
            await _incident(nc, "org1", f"inc-{n}", "dispatched", minutes_ago=10)
        await first.wait_idle()
        await receiver.wait_for(6)
        await asyncio.sleep(1.0)  # several more check cycles on both replicas
    assert len(receiver.bodies) == 6
    assert len(set(receiver.keys)) == 6


async def _health(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/health") as resp,
    ):
        return resp.status, await resp.json()


async def test_publish_outage_is_survived_and_reported(
    nc: NATS, tuned: Settings, receiver: Receiver
) -> None:
    """With the ALERTS stream gone every publish fails: the change waits in the outbox and
    /health turns 503 once it is older than the limit; when the stream is back the flush loop
    publishes it once and /health recovers."""
    worker = AlertsWorker()
    async with run_worker(worker, tuned, http_port=0) as handle:
        worker.outbox_stale_s = 0.5
        await _request(nc, "ionveil.api.alerts.rules.add", RULE)
        await nc.jetstream().delete_stream("ALERTS")
        await _incident(nc, "org1", "inc-1", "dispatched", minutes_ago=10)
        await receiver.wait_for(1)  # notifications do not depend on the stream
        async with asyncio.timeout(10):
            while (health := await _health(handle.http_port))[0] != 503:
                await asyncio.sleep(0.1)
        assert any("unpublished" in reason for reason in health[1]["reasons"])
        await nc.jetstream().add_stream(
            StreamConfig(name="ALERTS", subjects=["ionveil.alerts.>"], duplicate_window=120)
        )
        async with asyncio.timeout(10):
            while (await _health(handle.http_port))[0] != 200:
                await asyncio.sleep(0.1)
        ((subject, event),) = await _alert_events(nc, 1)
        assert subject == "ionveil.alerts.org1.critical" and event["metadata"]["seq"] == 1
        assert (await nc.jetstream().stream_info("ALERTS")).state.messages == 1


async def test_redelivered_transition_to_two_replicas_changes_once(
    nc: NATS, tuned: Settings, receiver: Receiver
) -> None:
    """The same policy transition published twice (new message ids, so the stream keeps
    both) and consumed by two worker replicas raises one alert, one notification, one
    ALERTS event."""
    tuned = tuned.model_copy(update={"alerts_default_channels": ["hook"]})
    async with (
        run_worker(AlertsWorker(), tuned, http_port=0) as first,
        run_worker(AlertsWorker(), tuned, http_port=0) as second,
    ):
        transition = {"from": "normal", "to": "restricted", "sequence": 4, "reason": "misses"}
        for copy in range(4):
            await nc.jetstream().publish(
                "ionveil.policy.transitions.org1",
                encode_payload(transition),
                headers={"Nats-Msg-Id": f"org1-4-copy{copy}"},
            )
        await first.wait_idle()
        await second.wait_idle()
        await receiver.wait_for(1)
        await asyncio.sleep(0.5)
        events = await _alert_events(nc, 1)
        active, _ = await _request(nc, "ionveil.api.alerts.org1.active", {})
    assert len(receiver.bodies) == 1 and len(events) == 1
    assert [(a["rule_id"], a["metadata"]["seq"]) for a in active] == [("policy-transition", 1)]

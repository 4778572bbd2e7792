"""The analytics worker on real NATS and PostgreSQL, and replay of its history by the simulator.

Dispatch events (one per message or an array) are recorded once per event id, however often they
are delivered; bad events are dead-lettered; the statistics endpoint answers; the worker runs as
its own NATS user under the shipped permissions. End to end: the recorded history of an org with
a run of SLA misses, replayed by the simulator worker over NATS, reproduces the transitions the
live policy worker made from the same events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS

from ionveil.errors import TransientError, ValidationError
from services.analytics import ResponseRecord
from services.analytics.models import validate_record
from workers.analytics import AnalyticsWorker
from workers.codec import decode_payload, encode_payload, parse_timestamp
from workers.embedded import EmbeddedNats
from workers.fleet import WORKERS, load_worker
from workers.policy import PolicyWorker
from workers.runtime import run_worker
from workers.settings import Settings
from workers.simulator import PatternIn, SimulatorWorker

_ids = itertools.count(1)
T0 = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)  # a Tuesday
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats-server.conf"


def _event(
    org: str,
    met: bool,
    *,
    event_id: str | None = None,
    at: datetime | None = None,
    severity: int = 3,
    minutes: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A dispatch event as dispatch systems publish it (ARCHITECTURE.md's DispatchEvent)."""
    n = next(_ids)
    return {
        "event_id": event_id or f"ev-{n}",
        "org_id": org,
        "dispatch_id": f"d-{n}",
        "timestamp": (at or T0 + timedelta(seconds=n)).isoformat(),
        "severity": severity,
        "response_time_minutes": minutes if minutes is not None else (12.0 if met else 45.0),
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


async def _request(nc: NATS, subject: str, payload: Any, timeout: float = 30) -> tuple[Any, dict]:
    reply = await nc.request(subject, encode_payload(payload), timeout=timeout)
    value, _ = decode_payload(reply.data, reply.headers)
    return value, reply.headers or {}


async def _stats(nc: NATS, org: str, **payload: Any) -> dict[str, Any]:
    body, _ = await _request(nc, f"ionveil.api.analytics.{org}.statistics", payload)
    return body


async def _rows(pool: asyncpg.Pool, org: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT incident_id, priority, response_time_minutes, region, recorded_at, sla_met "
        "FROM response_metrics WHERE org_id = $1 ORDER BY recorded_at, id",
        org,
    )


# -- recording ----------------------------------------------------------------------------------
async def test_analytics_records_single_and_array_events_once(
    nc: NATS, settings: Settings, analytics_pool: asyncpg.Pool
) -> None:
    """Single events and arrays are recorded with the event's fields; the same event id
    published again (another Nats-Msg-Id, inside an array, or replayed from the start of the
    stream by a re-created durable) is never counted twice."""
    dup = _event("metro", False, event_id="dup-1", severity=5, minutes=9.5)
    batch = [_event("metro", True), _event("metro", True, severity=1, minutes=100.0)]
    async with run_worker(AnalyticsWorker(), settings, http_port=0) as handle:
        await _publish(nc, "metro", dup, msg_id="a")
        await _publish(nc, "metro", dup, msg_id="b")
        await _publish(nc, "metro", [dup, dup, *batch], msg_id="c")
        await _publish(nc, "county", _event("county", True))
        await handle.wait_idle()
        first = await _rows(analytics_pool, "metro")
    await nc.jetstream().delete_consumer("DISPATCH", "analytics-recorder")
    async with run_worker(AnalyticsWorker(), settings, http_port=0) as handle:
        await handle.wait_idle()
        stats = await _stats(nc, "metro")
        again = await _rows(analytics_pool, "metro")
    assert len(first) == 3 and again == first
    by_id = {row["incident_id"]: row for row in first}
    row = by_id["dup-1"]
    assert (row["priority"], row["response_time_minutes"], row["region"]) == (5, 9.5, "north")
    assert row["recorded_at"] == parse_timestamp(dup["timestamp"]) and row["sla_met"] is False
    assert stats["count"] == 3 and stats["org_id"] == "metro"
    assert len(await _rows(analytics_pool, "county")) == 1


async def test_analytics_statistics_endpoint(
    nc: NATS, settings: Settings, analytics_pool: asyncpg.Pool
) -> None:
    """statistics answers calculate_statistics for the subject's org over [since, until) (JSON
    or MessagePack), counting the event's own SLA verdict; bad bounds are a 400 naming them."""
    events = [
        _event("metro", True, at=T0, severity=4, minutes=10.0),
        _event("metro", False, at=T0 + timedelta(minutes=1), severity=4, minutes=10.0),
        _event("metro", False, at=T0 + timedelta(minutes=2), severity=2, minutes=90.0),
        _event("metro", True, at=T0 + timedelta(hours=2), severity=2, minutes=30.0),
    ]
    async with run_worker(AnalyticsWorker(), settings, http_port=0) as handle:
        await _publish(nc, "metro", events)
        await handle.wait_idle()
        everything = await _stats(nc, "metro")
        window = await _stats(
            nc, "metro", since=T0.isoformat(), until=(T0 + timedelta(hours=1)).isoformat()
        )
        reply = await nc.request(
            "ionveil.api.analytics.metro.statistics",
            json.dumps({"since": T0.timestamp() + 90}).encode(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        as_json = json.loads(reply.data)
        empty = await _stats(nc, "nobody")
        bad, headers = await _request(
            nc, "ionveil.api.analytics.metro.statistics", {"since": "yesterday"}
        )
        reversed_range, _ = await _request(
            nc,
            "ionveil.api.analytics.metro.statistics",
            {"since": T0.isoformat(), "until": (T0 - timedelta(days=1)).isoformat()},
        )
        long_org, _ = await _request(nc, f"ionveil.api.analytics.{'x' * 200}.statistics", {})
    assert everything["count"] == 4 and everything["sla_compliance_rate"] == 0.5
    assert everything["max"] == 90.0 and everything["p50"] == 20.0
    assert set(everything["by_priority"]) == {"4", "2"}
    # The reported verdict wins: 10 minutes is within priority 4's 15, yet it was a miss.
    assert everything["by_priority"]["4"]["sla_compliance_rate"] == 0.5
    assert window["count"] == 3 and window["sla_compliance_rate"] == pytest.approx(1 / 3)
    assert as_json["count"] == 2 and as_json["since"].startswith("2026-03-03T08:01:30")
    assert empty["count"] == 0 and empty["sla_compliance_rate"] == 1.0
    assert headers.get("Nats-Service-Error-Code") == "400" and "since" in bad["error"]["message"]
    assert "until" in reversed_range["error"]["message"]
    assert "org" in long_org["error"]["message"]


@pytest.mark.parametrize(
    ("subject_org", "payload", "reason"),
    [
        ("metro", _event("county", False), "org_id"),
        ("metro", [_event("metro", True), _event("county", False)], "[1].org_id"),
        ("metro", {k: v for k, v in _event("metro", True).items() if k != "sla_met"}, "sla_met"),
        ("metro", _event("metro", True, severity=9), "severity"),
        ("metro", _event("metro", True, minutes=-1.0), "response_time_minutes"),
        ("metro", _event("metro", True, response_time_minutes=True), "response_time_minutes"),
        ("metro", _event("metro", True, timestamp="tomorrow"), "timestamp"),
        ("metro", _event("metro", True, event_id="   "), "event_id"),
        ("metro", [], "list"),
        ("metro.extra", _event("metro", False), "subject"),
    ],
    ids=[
        "org-mismatch",
        "org-mismatch-in-array",
        "no-sla_met",
        "severity",
        "negative-time",
        "bool-time",
        "timestamp",
        "blank-id",
        "empty-array",
        "subject",
    ],
)
async def test_analytics_bad_events_are_dead_lettered(
    nc: NATS,
    settings: Settings,
    analytics_pool: asyncpg.Pool,
    subject_org: str,
    payload: Any,
    reason: str,
) -> None:
    """A bad message goes to ionveil.dlq.<subject> with the reason and records nothing; the
    good events of the same batch are still recorded."""
    async with run_worker(AnalyticsWorker(), settings, http_port=0) as handle:
        await _publish(nc, subject_org, payload)
        await _publish(nc, "metro", _event("metro", True, event_id="good"))
        await handle.wait_idle()
        sub = await nc.jetstream().pull_subscribe("ionveil.dlq.>", durable=None, stream="DLQ")
        dead = await sub.fetch(1, timeout=5)
        await sub.unsubscribe()
    assert [row["incident_id"] for row in await _rows(analytics_pool, "metro")] == ["good"]
    assert dead[0].subject == f"ionveil.dlq.ionveil.dispatch.events.{subject_org}"
    assert reason in json.dumps(dict(dead[0].headers))


@pytest.mark.parametrize(
    ("reported", "minutes", "met"), [(None, 30.0, True), (None, 31.0, False), (False, 1.0, False)]
)
def test_analytics_record_sla_verdict(reported: bool | None, minutes: float, met: bool) -> None:
    """A record's SLA verdict is the reported one when given, else derived from the target."""
    record = ResponseRecord("o", "i", 3, minutes, "", T0, reported_sla_met=reported)
    assert record.sla_met is met and validate_record(record) == []


def test_analytics_record_rejects_a_non_boolean_verdict() -> None:
    """reported_sla_met must be a boolean or None, named in the problem."""
    record = ResponseRecord("o", "i", 3, 1.0, "", T0, reported_sla_met="yes")  # type: ignore[arg-type]
    assert validate_record(record) == ["reported_sla_met: must be a boolean or None"]


def test_analytics_worker_is_registered_in_the_fleet() -> None:
    """`ionveil up` runs the analytics worker: WORKERS names it and it loads by name."""
    assert WORKERS["analytics"] == "workers.analytics"
    assert load_worker("analytics") is AnalyticsWorker
    assert AnalyticsWorker.databases == ("analytics",)


async def test_analytics_collector_before_setup_is_transient() -> None:
    """The collector is unavailable (a 503, TransientError) until setup has run."""
    with pytest.raises(TransientError):
        _ = AnalyticsWorker().collector


# -- the shipped NATS permissions ------------------------------------------------------------
_USERS = ("admin", "policy", "analytics", "dashboard", "alerts", "simulator", "publisher")


@pytest.fixture
def secured_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A nats-server running deploy/nats/nats-server.conf; yields its URL."""
    for user in (*_USERS, "tenant-metro", "tenant-county"):
        env = f"IONVEIL_NATS_{user.upper().replace('-', '_')}_PASSWORD"
        monkeypatch.setenv(env, f"pw-{user}")
    server = EmbeddedNats(tmp_path / "nats", config_file=CONFIG)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


async def test_analytics_worker_runs_as_its_nats_user(
    secured_nats: str, dsns: dict[str, str], tmp_path: Path, analytics_pool: asyncpg.Pool
) -> None:
    """Connected as `analytics`, the worker provisions its durable, records, dead-letters and
    answers tenant metro; the dashboard user cannot pull from the analytics durable."""
    settings = Settings(
        nats_url=secured_nats,
        nats_user="analytics",
        nats_password="pw-analytics",
        analytics_dsn=dsns["analytics"],
        data_dir=tmp_path,
        log_format="console",
    )
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    clients: list[NATS] = []
    try:
        async with run_worker(AnalyticsWorker(), settings, http_port=0) as handle:
            for user in ("tenant-metro", "admin", "dashboard"):
                prefix = {"inbox_prefix": "_INBOX.metro"} if user == "tenant-metro" else {}
                clients.append(
                    await nats.connect(
                        secured_nats,
                        user=user,
                        password=f"pw-{user}",
                        error_cb=on_error,
                        allow_reconnect=False,
                        **prefix,
                    )
                )
            metro, admin, dashboard = clients
            js = metro.jetstream()
            await js.publish("ionveil.dispatch.events.metro", encode_payload(_event("metro", True)))
            await js.publish("ionveil.dispatch.events.metro", encode_payload({"event_id": "x"}))
            await handle.wait_idle()
            stats, _ = await _request(metro, "ionveil.api.analytics.metro.statistics", {})
            dlq = await admin.jetstream().stream_info("DLQ")
            assert not errors
            await dashboard.publish("$JS.API.CONSUMER.MSG.NEXT.DISPATCH.analytics-recorder", b"1")
            deadline = asyncio.get_running_loop().time() + 5
            while not errors and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
    finally:
        for client in clients:
            await client.close()
    assert stats["count"] == 1 and dlq.state.messages == 1
    assert len(errors) == 1 and "permissions violation" in str(errors[0]).lower()


# -- replay over NATS ----------------------------------------------------------------------------
SCENARIO = {
    "name": "live-defaults",
    "policy_order": ["normal", "watch", "restricted", "halted"],
    "escalation_threshold": 3,
    "deescalation_thresholds": {"watch": 10, "restricted": 20, "halted": 30},
}
# Tuesday's outcomes for metro, one a minute: two met, a run of four misses, a recovery of twelve,
# then a run of seven misses. Offsets of the misses: 120..300 and 1080..1440 seconds.
OUTCOMES = [True] * 2 + [False] * 4 + [True] * 12 + [False] * 7


def _replay(org: str = "metro", hours: int = 1) -> dict[str, Any]:
    end = T0 + timedelta(hours=hours)
    return {"replay": {"org_id": org, "start": T0.isoformat(), "end": end.isoformat()}}


async def test_simulator_replays_recorded_history_over_nats(nc: NATS, settings: Settings) -> None:
    """Events recorded by the analytics worker and replayed by the simulator worker
    (``ionveil.api.simulator.run`` with a replay pattern) escalate at the misses, exactly as the
    live policy worker did from the same events; compare, recommend and create accept replays."""
    events = [
        _event(
            "metro",
            met,
            at=T0 + timedelta(minutes=i),
            # One miss reported although within the 30-minute target: the verdict counts.
            minutes=20.0 if i == 3 else None,
        )
        for i, met in enumerate(OUTCOMES)
    ]
    events.append(_event("county", False, at=T0 + timedelta(minutes=1)))
    async with (
        run_worker(AnalyticsWorker(), settings, http_port=0) as analytics,
        run_worker(PolicyWorker(), settings, http_port=0) as policy,
        run_worker(SimulatorWorker(), settings, http_port=0),
    ):
        await _publish(nc, "metro", events[:10])
        for event in events[10:-1]:
            await _publish(nc, "metro", event)
        await _publish(nc, "county", events[-1])
        await analytics.wait_idle()
        await policy.wait_idle()
        live, _ = await _request(nc, "ionveil.api.policy.metro.state", {"limit": 100})
        tuesday = {**_replay(), "description": "last Tuesday"}
        result, _ = await _request(
            nc, "ionveil.api.simulator.run", {"scenario": SCENARIO, "pattern": tuesday}
        )
        strict = {**SCENARIO, "name": "patient", "escalation_threshold": 5}
        compared, _ = await _request(
            nc,
            "ionveil.api.simulator.compare",
            {"scenarios": [SCENARIO, strict], "pattern": _replay()},
        )
        recommended, _ = await _request(
            nc,
            "ionveil.api.simulator.recommend",
            {"base": SCENARIO, "pattern": _replay(), "escalation_thresholds": [2, 3, 5]},
        )
        created, _ = await _request(
            nc,
            "ionveil.api.simulator.create",
            {"scenario": SCENARIO, "pattern": {**_replay(), "pattern_id": "tuesday"}},
        )
        status, _ = await _request(
            nc, "ionveil.api.simulator.status", {"simulation_id": created["simulation_id"]}
        )
    replayed = [(t["from"], t["to"], t["timestamp"]) for t in result["policy_transitions"]]
    lived = [
        (t["from"], t["to"], parse_timestamp(t["timestamp"]).timestamp() - T0.timestamp())
        for t in reversed(live["transitions"])
    ]
    assert replayed == lived
    assert replayed[0] == ("normal", "watch", 240.0)  # the third miss, at minute 4
    assert replayed[1:] == [
        ("watch", "normal", 900.0),  # ten met in a row after the last miss (minute 5)
        ("normal", "watch", 1200.0),  # the third miss of the second run
        ("watch", "restricted", 1380.0),  # three more misses
    ]
    assert result["final_policy"] == "restricted"
    assert all(OUTCOMES[int(ts) // 60] is False for _, to, ts in replayed if to != "normal")
    assert result["status"] == "completed" and result["duration_seconds"] == 3600
    assert sum(result["time_in_each_policy"].values()) == 3600
    assert result["failure_pattern"]["pattern_id"].startswith("replay-metro-")
    assert result["failure_pattern"]["description"] == "last Tuesday"
    assert set(compared["results"]) == {"live-defaults", "patient"}
    assert compared["results"]["patient"]["total_escalations"] < result["total_escalations"]
    assert "suggested_escalation_threshold" in recommended
    assert status["pattern_id"] == "tuesday" and status["duration_seconds"] == 3600


@pytest.mark.parametrize(
    ("op", "pattern", "needle"),
    [
        ("run", {"replay": {"org_id": "metro", "start": T0.isoformat()}}, "end"),
        (
            "run",
            {"replay": {"org_id": "metro", "start": T0.isoformat(), "end": T0.isoformat()}},
            "end: must be after start",
        ),
        ("create", {"replay": {"org_id": "", "start": 0, "end": 60}}, "org_id"),
        ("create", {"replay": {"org_id": "   ", "start": 0, "end": 60}}, "pattern.replay.org_id"),
        ("compare", {"replay": {"org_id": "m", "start": "when?", "end": 60}}, "start"),
        ("recommend", {"replay": {"org_id": "m", "start": 0, "end": True}}, "end"),
        ("run", {**_replay(), "generator": "burst"}, "exactly one of events, generator or replay"),
    ],
    ids=["no-end", "empty-range", "no-org", "blank-org", "bad-start", "bool-end", "two-sources"],
)
async def test_simulator_replay_validation_errors(
    nc: NATS, settings: Settings, op: str, pattern: dict[str, Any], needle: str
) -> None:
    """A bad replay spec gets a 400 reply naming the field; the worker keeps serving."""
    payload: dict[str, Any] = {"pattern": pattern}
    if op == "compare":
        payload["scenarios"] = [SCENARIO]
    elif op == "recommend":
        payload["base"] = SCENARIO
    else:
        payload["scenario"] = SCENARIO
    async with run_worker(SimulatorWorker(), settings, http_port=0):
        body, headers = await _request(nc, f"ionveil.api.simulator.{op}", payload)
        ok, _ = await _request(
            nc, "ionveil.api.simulator.run", {"scenario": SCENARIO, "pattern": _replay("empty")}
        )
    assert headers.get("Nats-Service-Error-Code") == "400"
    assert needle in body["error"]["message"]
    assert ok["status"] == "completed" and ok["policy_transitions"] == []


async def test_simulator_replay_needs_the_worker_and_its_analytics_database() -> None:
    """A replay spec is not a standalone pattern: PatternIn.domain refuses it, and a worker
    that was not set up (no analytics pool) answers with a transient error."""
    spec = PatternIn.model_validate(_replay())
    with pytest.raises(ValidationError, match=r"pattern\.replay"):
        spec.domain()
    with pytest.raises(TransientError, match="analytics"):
        await SimulatorWorker().resolve_pattern(spec)


async def test_simulator_replay_with_the_analytics_database_down(
    nc: NATS, settings: Settings
) -> None:
    """When the analytics database cannot be used, a replay request gets a 503 (transient)
    error reply naming it, and other patterns are still served."""
    async with run_worker(SimulatorWorker(), settings, http_port=0) as handle:
        await handle.ctx.pools["analytics"].close()
        body, headers = await _request(
            nc, "ionveil.api.simulator.run", {"scenario": SCENARIO, "pattern": _replay()}
        )
        events = {"events": [[0, False], [1, False], [2, False]]}
        ok, _ = await _request(
            nc, "ionveil.api.simulator.run", {"scenario": SCENARIO, "pattern": events}
        )
    assert headers.get("Nats-Service-Error-Code") == "503"
    assert "analytics database" in body["error"]["message"]
    assert ok["final_policy"] == "watch"


async def test_simulator_replay_shortens_a_long_pattern_id(settings: Settings, nc: NATS) -> None:
    """A replay of an org with a long id still gets a valid pattern id (at most 128 chars)."""
    org = "o" * 120
    async with run_worker(SimulatorWorker(), settings, http_port=0):
        result, _ = await _request(
            nc, "ionveil.api.simulator.run", {"scenario": SCENARIO, "pattern": _replay(org)}
        )
    pattern_id = result["failure_pattern"]["pattern_id"]
    assert result["status"] == "completed"
    assert pattern_id.startswith("replay-") and len(pattern_id) <= 128

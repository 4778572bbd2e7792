"""SQL metacharacters round-trip unchanged through PostgreSQL; hostile regexes stay linear.

Strings with quotes, semicolons and comment markers travel through the real workers into
their databases and come back byte for byte (asyncpg parameters, never string building). A
catastrophic-backtracking pattern as a suppression returns promptly (RE2).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from tests.faults._figures import FIGURES
from tests.faults._workload import dispatch_events
from workers.codec import decode_payload, encode_payload
from workers.fleet import load_worker
from workers.runtime import run_worker
from workers.settings import Settings

pytestmark = pytest.mark.security

SQL = "'; DROP TABLE x; --"
SQL_ORG = "o';DROP_TABLE_alerts;--"  # a subject token: no spaces or dots
SQL_TEXT = 'Robert\'); DROP TABLE alerts;-- "quoted" \\ back\\slash $1 %s ?'


async def _call(nc: NATS, subject: str, body: dict[str, Any]) -> Any:
    reply = await nc.request(subject, encode_payload(body), timeout=10)
    value, _ = decode_payload(reply.data, reply.headers)
    assert not (reply.headers or {}).get("Nats-Service-Error-Code"), value
    return value


async def test_alert_rule_and_suppression_texts_round_trip(nc: NATS, settings: Settings) -> None:
    """A rule (id, name, description, org) and a suppression (reason, user) full of SQL
    metacharacters are stored in the audit database and read back unchanged, by the same
    worker after a refresh and by a fresh worker that loads them from PostgreSQL."""
    rule = {
        "rule_id": "r-sql';--",
        "name": SQL,
        "description": SQL_TEXT,
        "condition_type": "sla_breach",
        "threshold_config": {"note": SQL},
        "severity": "warning",
        "notification_channels": ["email"],
        "org_id": SQL_ORG,
    }
    async with run_worker(load_worker("alerts")(), settings, http_port=0):
        await _call(nc, "ionveil.api.alerts.rules.add", rule)
        sup = await _call(
            nc,
            f"ionveil.api.alerts.{SQL_ORG}.suppress",
            {"rule_pattern": "r-.*", "duration_minutes": 30, "reason": SQL_TEXT, "user": SQL},
        )
    async with run_worker(load_worker("alerts")(), settings, http_port=0):
        rules = await _call(nc, "ionveil.api.alerts.rules.list", {"org_id": SQL_ORG})
        sups = await _call(nc, f"ionveil.api.alerts.{SQL_ORG}.suppressions", {})
    stored = next(r for r in rules if r["rule_id"] == rule["rule_id"])
    for key in ("name", "description", "threshold_config", "org_id"):
        assert stored[key] == rule[key], key
    (mine,) = [s for s in sups if s["suppression_id"] == sup["suppression_id"]]
    assert mine["reason"] == SQL_TEXT and mine["org_id"] == SQL_ORG
    FIGURES.bad_inputs += 2


async def test_dashboard_region_and_org_round_trip_through_checkpoint(
    nc: NATS, settings: Settings
) -> None:
    """Dispatch events whose org and region carry SQL metacharacters are aggregated,
    checkpointed to the analytics database at drain, and restored unchanged by a new
    dashboard worker (regions API)."""
    events = dispatch_events(SQL_ORG, 12)
    for event in events:
        event["region"] = SQL
    js = nc.jetstream()
    async with run_worker(load_worker("dashboard")(), settings, http_port=0) as handle:
        for event in events:
            await js.publish(
                f"ionveil.dispatch.events.{SQL_ORG}",
                encode_payload(event),
                headers={"Nats-Msg-Id": event["event_id"]},
            )
        await handle.wait_idle()
    async with run_worker(load_worker("dashboard")(), settings, http_port=0) as handle:
        stats = handle.worker.aggregator.get_ingest_stats(SQL_ORG)  # type: ignore[attr-defined]
        regions = await _call(nc, f"ionveil.api.dashboard.{SQL_ORG}.regions", {"window": "1d"})
    assert stats["accepted"] == len(events), stats
    assert [r["region"] for r in regions] == [SQL]
    FIGURES.bad_inputs += len(events)


async def test_policy_state_of_an_sql_org_survives_restart(nc: NATS, settings: Settings) -> None:
    """The live policy state of an org named with SQL metacharacters is persisted in the core
    database and continues after a restart."""
    events = dispatch_events(SQL_ORG, 9, prefix="pol")
    js = nc.jetstream()
    async with run_worker(load_worker("policy")(), settings, http_port=0) as handle:
        for event in events:
            await js.publish(
                f"ionveil.dispatch.events.{SQL_ORG}",
                encode_payload(event),
                headers={"Nats-Msg-Id": event["event_id"]},
            )
        await handle.wait_idle()
    async with run_worker(load_worker("policy")(), settings, http_port=0):
        state = await _call(nc, f"ionveil.api.policy.{SQL_ORG}.state", {})
    assert state["org_id"] == SQL_ORG
    assert state["outcomes_recorded"] == len(events)


async def test_catastrophic_regex_suppression_returns_promptly(
    nc: NATS, settings: Settings
) -> None:
    """``(a+)+$`` (exponential on a backtracking engine) is accepted as a suppression pattern
    and matching it against a 100 000-character rule id takes milliseconds (RE2)."""
    async with run_worker(load_worker("alerts")(), settings, http_port=0) as handle:
        started = time.perf_counter()
        await _call(
            nc,
            "ionveil.api.alerts.good.suppress",
            {"rule_pattern": "(a+)+$", "duration_minutes": 5, "reason": "redos"},
        )
        suppressions = handle.worker.monitor.suppressions  # type: ignore[attr-defined]
        hostile = "a" * 100_000 + "!"
        assert not await asyncio.wait_for(suppressions.is_suppressed_shared("good", hostile), 2)
        assert suppressions.is_suppressed("good", "a" * 100_000)
        elapsed = time.perf_counter() - started
        await _call(nc, "ionveil.api.alerts.good.active", {})
    assert elapsed < 2.0, elapsed
    FIGURES.bad_inputs += 1

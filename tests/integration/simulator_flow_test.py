"""The policy simulator end to end: comparison and recommendation on real runs, the
PolicyEngine behind it, the PostgreSQL store, replay of recorded history, and the NATS worker
(endpoints, the SIMJOBS job queue, results published and surviving a restart)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog
from nats.aio.client import Client as NATS

from ionveil.errors import ConflictError, NotFoundError, ValidationError
from ionveil.policy import PolicyEngine
from services.analytics.metrics import MetricsCollector
from services.simulator import (
    FailurePattern,
    FailurePatternGenerator,
    PolicyScenario,
    PolicySimulator,
    ScenarioBuilder,
    SimulationStatus,
    sweep_scenarios,
)
from services.simulator.replay import pattern_from_history, replay_duration_seconds
from services.simulator.store import InMemorySimulationStore, PostgresSimulationStore
from workers.codec import decode_payload, encode_payload
from workers.runtime import run_worker
from workers.settings import Settings
from workers.simulator import JOBS_SUBJECT, SimulatorWorker, results_subject

ORDER = ["normal", "watch", "restricted", "halted"]
T0 = datetime(2026, 3, 3, tzinfo=UTC)


def base() -> PolicyScenario:
    """The default ladder with moderate thresholds."""
    return PolicyScenario("base", ORDER, 3, {"watch": 10, "restricted": 20, "halted": 30})


# -- comparison, recommendation, the engine behind them ---------------------------------------
def test_compare_runs_every_scenario_against_the_same_pattern() -> None:
    """Each scenario gets its own result; a lower threshold escalates at least as often."""
    pattern = FailurePatternGenerator.burst_failure(4, 120, 7200, seed=1)
    scenarios = [
        ScenarioBuilder("eager").with_policy_order(ORDER).with_escalation_threshold(2).build(),
        ScenarioBuilder("calm").with_policy_order(ORDER).with_escalation_threshold(5).build(),
    ]
    results = PolicySimulator().compare_scenarios(scenarios, pattern)
    assert list(results) == ["eager", "calm"]
    assert results["eager"].total_escalations > results["calm"].total_escalations == 0
    assert all(r.duration_seconds == 7200 for r in results.values())
    assert results["calm"].metrics["bursts_detected"] == 0


def test_compare_in_a_process_pool_gives_the_same_results() -> None:
    """The parallel path (worker processes, sandboxed engines) equals the sequential one."""
    pattern = FailurePatternGenerator.constant_failure_rate(0.25, 20_000, seed=3)
    candidates = sweep_scenarios(base(), [2, 3, 4], [0.5, 1.0])
    sequential = PolicySimulator().compare_scenarios(candidates, pattern)
    parallel = PolicySimulator(parallel_min_events=1, max_workers=2).compare_scenarios(
        candidates, pattern
    )
    for name, result in sequential.items():
        other = parallel[name]
        assert other.status is SimulationStatus.COMPLETED
        assert other.policy_transitions == result.policy_transitions
        assert other.sla_compliance_rate == result.sla_compliance_rate
        assert other.metrics == result.metrics


def test_compare_rejects_duplicate_names_and_empty_lists() -> None:
    """Scenario names key the comparison, so they must be unique; at least one is needed."""
    sim = PolicySimulator()
    with pytest.raises(ValidationError, match="duplicate"):
        sim.compare_scenarios([base(), base()], FailurePattern("p", []))
    with pytest.raises(ValidationError, match="scenarios"):
        sim.compare_scenarios([], FailurePattern("p", []))


def test_recommendation_on_a_sweep_prefers_prompt_escalation_under_bursts() -> None:
    """Bursts of 5 failures: a threshold above 5 never detects them and is not recommended;
    the pick is on the Pareto frontier and its thresholds are the suggested ones."""
    sim = PolicySimulator()
    patterns = [
        FailurePatternGenerator.burst_failure(5, 300, 6 * 3600, seed=2),
        FailurePatternGenerator.cascading_failure(0.02, 1.5, 2400, 6 * 3600, seed=2),
    ]
    candidates = sweep_scenarios(base(), [2, 3, 6, 8], [0.5, 1.0, 2.0])
    results = [r for p in patterns for r in sim.compare_scenarios(candidates, p).values()]
    rec = sim.generate_recommendation(results)
    chosen = rec["recommended"]
    assert chosen["escalation_threshold"] <= 5
    assert chosen["scenario"] in {s["scenario"] for s in rec["frontier"]}
    assert rec["suggested_escalation_threshold"] == chosen["escalation_threshold"]
    assert rec["suggested_deescalation_thresholds"] == chosen["deescalation_thresholds"]
    assert len(rec["scores"]) == len(candidates)
    assert isinstance(rec["reasoning"], str) and chosen["scenario"] in rec["reasoning"]


def test_recommended_configuration_behaves_the_same_in_a_live_engine() -> None:
    """The recommended thresholds, applied to a PolicyEngine, reproduce the simulated run."""
    sim = PolicySimulator()
    pattern = FailurePatternGenerator.cascading_failure(0.05, 2.0, 1200, 3600, seed=8)
    results = sim.compare_scenarios(sweep_scenarios(base(), [2, 4], [0.5, 1.0]), pattern)
    rec = sim.generate_recommendation(list(results.values()))
    engine = PolicyEngine(
        ORDER, rec["suggested_escalation_threshold"], rec["suggested_deescalation_thresholds"]
    )
    moved = engine.record_many((float(t), ok) for t, ok in pattern.events)
    simulated = results[rec["recommended"]["scenario"]]
    assert [t.as_dict() for t in moved] == simulated.policy_transitions
    assert engine.current_policy == simulated.final_policy


# -- storage ------------------------------------------------------------------------------------
@pytest.fixture(params=["postgres", "memory"])
async def store(request, core_pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """The PostgreSQL store on a fresh schema, and the in-memory one, behind one contract."""
    made = (
        PostgresSimulationStore(core_pool)
        if request.param == "postgres"
        else (InMemorySimulationStore())
    )
    await made.migrate()
    await made.migrate()  # idempotent
    yield made


async def test_store_keeps_runs_results_and_scenarios(store) -> None:
    """Create, claim, save a result, read it back with its pattern; list; named scenarios."""
    pattern = FailurePattern("p", [(0, False), (1, False), (2, False), (5, True)], "desc")
    await store.create("s1", base(), pattern, 60)
    with pytest.raises(ConflictError):
        await store.create("s1", base(), pattern, 60)
    stored = await store.get("s1")
    assert (stored.status, stored.pattern, stored.duration_seconds) == (
        SimulationStatus.PENDING,
        pattern,
        60,
    )
    assert await store.claim("s1") is True
    assert await store.claim("s1") is False
    assert await store.claim("s1", takeover=True) is True
    sim = PolicySimulator()
    result = sim.run_simulation(sim.create_simulation(base(), pattern, 60, simulation_id="s1"))
    await store.save_result(result)
    stored = await store.get("s1")
    assert stored.status is SimulationStatus.COMPLETED
    assert stored.result.policy_transitions == result.policy_transitions
    assert stored.result.failure_pattern == pattern
    assert [r.simulation_id for r in await store.list_recent()] == ["s1"]
    await store.save_scenario(base())
    assert await store.get_scenario("base") == base()
    with pytest.raises(NotFoundError):
        await store.get_scenario("nope")


async def test_store_cancellation_requests(store) -> None:
    """Pending -> cancelled at once; running -> flagged; finished -> unchanged."""
    for sim_id in ("a", "b"):
        await store.create(sim_id, base(), FailurePattern("p", []), 60)
    assert await store.request_cancel("a") is SimulationStatus.CANCELLED
    await store.claim("b")
    assert await store.request_cancel("b") is SimulationStatus.RUNNING
    assert await store.cancel_requested(["a", "b"]) == {"b"}
    with pytest.raises(NotFoundError):
        await store.request_cancel("zzz")


@pytest.mark.parametrize("call", ["get", "set_status", "claim"])
async def test_store_unknown_ids_are_not_found(store, call: str) -> None:
    """Every lookup of an unknown id raises NotFoundError (a KeyError)."""
    args = {"get": (), "set_status": (SimulationStatus.RUNNING,), "claim": ()}[call]
    with pytest.raises(KeyError):
        await getattr(store, call)("missing", *args)


# -- replay ---------------------------------------------------------------------------------
async def test_replay_recorded_history_from_postgresql(analytics_pool: asyncpg.Pool) -> None:
    """Recorded responses become events (offset = seconds since start, success = SLA met),
    other orgs and times are left out, and the replay escalates where the misses were."""
    collector = MetricsCollector(analytics_pool)
    await collector.migrate()
    minutes = [5, 50, 50, 50, 5, 5]  # priority 4: SLA 15 minutes
    for i, m in enumerate(minutes):
        await collector.record_response(
            "org-a", f"i{i}", 4, m, "north", T0 + timedelta(seconds=10 * i)
        )
    await collector.record_response("org-b", "other", 4, 50, "north", T0)
    await collector.record_response("org-a", "late", 4, 50, "north", T0 + timedelta(days=2))
    end = T0 + timedelta(hours=1)
    pattern = await pattern_from_history(analytics_pool, "org-a", T0, end)
    assert pattern.events == [
        (0, True),
        (10, False),
        (20, False),
        (30, False),
        (40, True),
        (50, True),
    ]
    sim = PolicySimulator()
    result = sim.run_simulation(
        sim.create_simulation(base(), pattern, replay_duration_seconds(T0, end))
    )
    assert result.policy_transitions[0]["timestamp"] == 30.0 and result.final_policy == "watch"
    assert sum(result.time_in_each_policy.values()) == 3600


@pytest.mark.parametrize(
    ("org", "start", "end", "field"),
    [
        ("", T0, T0 + timedelta(1), "org_id"),
        ("o", T0, T0, "end"),
        ("o", datetime(2026, 1, 1), T0, "start"),
    ],
)
async def test_replay_rejects_bad_ranges(org, start, end, field: str) -> None:
    """An empty org, an empty range or a naive datetime is rejected naming the field."""
    with pytest.raises(ValidationError, match=field):
        await pattern_from_history(object(), org, start, end)


# -- over NATS ------------------------------------------------------------------------------
async def _call(nc: NATS, op: str, payload: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    reply = await nc.request(f"ionveil.api.simulator.{op}", encode_payload(payload), timeout=30)
    value, _ = decode_payload(reply.data, reply.headers)
    return value, reply.headers or {}


SCENARIO = {
    "name": "wire",
    "policy_order": ORDER,
    "escalation_threshold": 3,
    "deescalation_thresholds": {"watch": 10, "restricted": 20, "halted": 30},
}
BURSTS = {
    "generator": "burst",
    "params": {"burst_size": 4, "burst_interval_seconds": 100, "duration_seconds": 1000},
}


async def _wait_status(nc: NATS, sim_id: str, want: str, timeout_s: float = 20.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body, _ = await _call(nc, "status", {"simulation_id": sim_id})
        if body["status"] == want or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_endpoints_create_run_status_compare_recommend(nc: NATS, settings: Settings) -> None:
    """The six endpoints answer over real NATS with results stored in PostgreSQL."""
    async with run_worker(SimulatorWorker(), settings, http_port=0):
        created, _ = await _call(nc, "create", {"scenario": SCENARIO, "pattern": BURSTS})
        sim_id = created["simulation_id"]
        assert (await _call(nc, "status", {"simulation_id": sim_id}))[0]["status"] == "pending"
        result, _ = await _call(nc, "run", {"simulation_id": sim_id})
        assert result["status"] == "completed" and result["total_escalations"] == 10
        assert sum(result["time_in_each_policy"].values()) == 1000
        status, _ = await _call(nc, "status", {"simulation_id": sim_id})
        assert status["result"]["policy_transitions"] == result["policy_transitions"]
        again, _ = await _call(nc, "run", {"simulation_id": sim_id})
        assert again["policy_transitions"] == result["policy_transitions"]
        cancelled, _ = await _call(nc, "cancel", {"simulation_id": sim_id})
        assert cancelled == {"simulation_id": sim_id, "cancelled": False, "status": "completed"}

        other = {**SCENARIO, "name": "calm", "escalation_threshold": 6}
        compared, _ = await _call(
            nc, "compare", {"scenarios": [SCENARIO, other], "pattern": BURSTS}
        )
        assert set(compared["results"]) == {"wire", "calm"}
        rec, _ = await _call(nc, "recommend", {"results": list(compared["results"].values())})
        assert rec["recommended"]["scenario"] == "wire"
        swept, _ = await _call(
            nc,
            "recommend",
            {"base": SCENARIO, "patterns": [BURSTS], "escalation_thresholds": [2, 3, 8]},
        )
        assert swept["suggested_escalation_threshold"] in (2, 3)
        listed, _ = await _call(
            nc, "recommend", {"scenarios": [SCENARIO, other], "pattern": BURSTS}
        )
        assert listed["recommended"]["scenario"] == "wire"


@pytest.mark.parametrize(
    ("op", "payload", "code", "needle"),
    [
        (
            "create",
            {"scenario": {**SCENARIO, "policy_order": ["x"]}, "pattern": BURSTS},
            "400",
            "policy_order",
        ),
        ("create", {"scenario": SCENARIO, "pattern": {"events": [[-5, True]]}}, "400", "offset"),
        (
            "create",
            {"scenario": SCENARIO, "pattern": {"generator": "burst", "params": {}}},
            "400",
            "params",
        ),
        ("create", {"scenario": SCENARIO, "pattern": BURSTS, "duration": 0}, "400", "duration"),
        ("status", {"simulation_id": "nope"}, "404", "not found"),
        ("run", {}, "400", "simulation_id"),
        ("run", {"simulation_id": "nope", "async": True}, "404", "not found"),
        ("recommend", {"base": SCENARIO}, "400", "patterns"),
        ("recommend", {"pattern": BURSTS}, "400", "scenarios"),
        ("recommend", {"results": []}, "400", "results"),
    ],
)
async def test_endpoints_answer_bad_requests_with_clear_errors(
    nc: NATS, settings: Settings, op: str, payload: dict, code: str, needle: str
) -> None:
    """Invalid input gets an error reply naming the field; the worker keeps serving."""
    async with run_worker(SimulatorWorker(), settings, http_port=0):
        body, headers = await _call(nc, op, payload)
        assert headers.get("Nats-Service-Error-Code") == code
        assert needle in body["error"]["message"]
        ok, _ = await _call(nc, "create", {"scenario": SCENARIO, "pattern": BURSTS})
        assert "simulation_id" in ok


async def test_async_job_publishes_result_and_survives_a_restart(
    nc: NATS, settings: Settings
) -> None:
    """run with async queues a SIMJOBS job; the result is published and stored; after the
    worker restarts, status still reports the result; a job queued while no worker runs is
    taken by the next one."""
    async with run_worker(SimulatorWorker(), settings, http_port=0) as handle:
        created, _ = await _call(nc, "create", {"scenario": SCENARIO, "pattern": BURSTS})
        sim_id = created["simulation_id"]
        sub = await nc.subscribe(results_subject(sim_id))
        queued, _ = await _call(nc, "run", {"simulation_id": sim_id, "async": True})
        assert queued == {"simulation_id": sim_id, "status": "pending", "queued": True}
        msg = await sub.next_msg(timeout=20)
        published, _ = decode_payload(msg.data, msg.headers)
        assert published["simulation_id"] == sim_id and published["status"] == "completed"
        await sub.unsubscribe()
        await handle.wait_idle()
    # a job with its inputs inline, published while no simulator runs
    await nc.jetstream().publish(
        JOBS_SUBJECT,
        encode_payload({"simulation_id": "inline-1", "scenario": SCENARIO, "pattern": BURSTS}),
        headers={"Nats-Msg-Id": "inline-1"},
    )
    async with run_worker(SimulatorWorker(), settings, http_port=0) as handle:
        status, _ = await _call(nc, "status", {"simulation_id": sim_id})
        assert status["status"] == "completed"
        assert status["result"]["policy_transitions"] == published["policy_transitions"]
        inline = await _wait_status(nc, "inline-1", "completed")
        assert inline["result"]["total_escalations"] == 10
        await handle.wait_idle()


async def test_replicas_share_the_job_queue(nc: NATS, settings: Settings) -> None:
    """Two replicas on one queue: every job runs once and ends completed."""
    async with (
        run_worker(SimulatorWorker(), settings, http_port=0) as one,
        run_worker(SimulatorWorker(), settings, http_port=0) as two,
    ):
        ids = []
        for _ in range(6):
            body, _ = await _call(
                nc, "run", {"scenario": SCENARIO, "pattern": BURSTS, "async": True}
            )
            ids.append(body["simulation_id"])
        for sim_id in ids:
            assert (await _wait_status(nc, sim_id, "completed"))["status"] == "completed"
        await one.wait_idle()
        await two.wait_idle()


class SlowSimulator(PolicySimulator):
    """A simulator whose runs pause 10 ms per chunk, so a test can catch one running."""

    def run_simulation(self, simulation_id: str, *, progress=None):  # type: ignore[override]
        """Run with a progress callback that sleeps a little after every chunk."""
        return super().run_simulation(simulation_id, progress=lambda d, t: time.sleep(0.01))


async def test_cancel_over_nats_pending_and_running(nc: NATS, settings: Settings) -> None:
    """A pending run is cancelled at once; a running job stops at its next chunk."""
    worker = SimulatorWorker(cancel_poll_s=0.05)
    worker.simulator = SlowSimulator(1, chunk_size=1_000)
    async with run_worker(worker, settings, http_port=0):
        created, _ = await _call(nc, "create", {"scenario": SCENARIO, "pattern": BURSTS})
        body, _ = await _call(nc, "cancel", {"simulation_id": created["simulation_id"]})
        assert body["cancelled"] is True and body["status"] == "cancelled"
        ran, _ = await _call(nc, "run", {"simulation_id": created["simulation_id"]})
        assert ran["status"] == "cancelled"

        big = {
            "generator": "constant",
            "params": {"rate": 0.3, "duration_seconds": 500_000, "seed": 1},
        }
        created, _ = await _call(nc, "create", {"scenario": SCENARIO, "pattern": big})
        sim_id = created["simulation_id"]
        await _call(nc, "run", {"simulation_id": sim_id, "async": True})
        await _wait_status(nc, sim_id, "running")
        body, _ = await _call(nc, "cancel", {"simulation_id": sim_id})
        assert body["cancelled"] is True
        final = await _wait_status(nc, sim_id, "cancelled")
        assert final["status"] == "cancelled"
        assert final["result"]["metrics"]["events_processed"] < 500_000


async def test_cli_remote_and_replay(
    nc: NATS,
    settings: Settings,
    dsns: dict[str, str],
    analytics_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,
) -> None:
    """``ionveil simulate --remote`` asks the worker (run, compare, recommend) and
    ``--replay ORG FROM TO`` simulates recorded history from the analytics database."""
    from workers.cli import main

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # the CLI reconfigures logging
    monkeypatch.setattr(root, "level", root.level)
    config = structlog.get_config()
    request_cleanup = lambda: structlog.configure(**config)  # noqa: E731
    server_url = settings.nats_url or ""  # the suite's real server, handed to the CLI
    monkeypatch.setenv("IONVEIL_NATS_URL", server_url)
    monkeypatch.setenv("IONVEIL_ANALYTICS_DSN", dsns["analytics"])
    monkeypatch.setenv("IONVEIL_DATA_DIR", str(tmp_path))
    collector = MetricsCollector(analytics_pool)
    await collector.migrate()
    for i, minutes in enumerate([50, 50, 50, 5]):
        await collector.record_response("org-r", f"r{i}", 4, minutes, "", T0 + timedelta(seconds=i))
    replay = [
        "simulate",
        "--replay",
        "org-r",
        T0.isoformat(),
        (T0 + timedelta(hours=1)).isoformat(),
    ]
    assert await asyncio.to_thread(main, replay) == 0
    out = capsys.readouterr().out
    assert "replay-org-r" in out and "normal -> watch" in out and "3600 s" in out

    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(f"name: remote\npolicy_order: {ORDER}\nescalation_threshold: 3\n")
    async with run_worker(SimulatorWorker(), settings, http_port=0):
        base_args = ["simulate", "--remote", "--pattern", "burst", "--duration", "1000"]
        assert await asyncio.to_thread(main, [*base_args, "--scenario", str(scenario_file)]) == 0
        assert "scenario 'remote'" in capsys.readouterr().out
        compare = [*base_args, "--compare", str(scenario_file), str(scenario_file)]
        assert await asyncio.to_thread(main, compare) == 2  # duplicate names: a clear error
        assert "duplicate" in capsys.readouterr().err
        sweep = [*base_args, "--recommend", "--thresholds", "2,3"]
        assert await asyncio.to_thread(main, sweep) == 0
        assert "recommended: cli/esc=" in capsys.readouterr().out
    request_cleanup()

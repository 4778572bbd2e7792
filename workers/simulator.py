"""The simulator worker: the policy simulator on NATS.

Endpoints (``ionveil.api.simulator.<op>``, request-reply, MessagePack or JSON):

* ``create`` ``{scenario, pattern, duration?, simulation_id?}`` -> ``{simulation_id, status}``:
  validates and stores a pending run in the core database.
* ``run`` ``{simulation_id}`` (or ``{scenario, pattern, duration?}`` to create and run at once)
  ``[, "async": true]``: runs it in a thread and replies with the result, or with ``async``
  enqueues a job on ``ionveil.simulator.jobs`` and replies ``{simulation_id, status, queued}``.
* ``status`` ``{simulation_id}`` -> ``{simulation_id, status, error_message, result?}`` from the
  store, so it survives a restart and any replica answers it.
* ``cancel`` ``{simulation_id}`` -> ``{simulation_id, cancelled, status}``: a pending run is
  cancelled at once; a running one is flagged in the store and stopped by the replica running
  it (which polls its flags) at its next chunk.
* ``compare`` ``{scenarios, pattern, duration?}`` -> ``{results: {name: result}}``.
* ``recommend`` ``{results}`` (results from ``compare``/``status``), or ``{base, patterns |
  pattern, escalation_thresholds?, deescalation_scales?, duration?}`` (a sweep), or
  ``{scenarios, patterns | pattern}`` -> the recommendation dict.

A pattern is ``{events: [[offset, ok], ...]}``, ``{generator: constant|burst|cascade,
params: {...}}`` or ``{replay: {org_id, start, end}}`` (the org's recorded dispatch outcomes in
the analytics database, written by the analytics worker, as ``pattern_from_history`` builds
them: "what would this policy have done last Tuesday?"); without ``duration`` a run covers the
pattern's own span, a replay the whole ``[start, end]`` range. Job consumer
(durable ``simulator-jobs``, a work queue shared by replicas): runs the job, stores the result,
publishes it on ``ionveil.simulator.results.<simulation_id>``. Replies and published results
carry at most ``max_reply_transitions`` transitions (the stored result has all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from datetime import datetime
from typing import Any, Literal

import asyncpg
import structlog
from prometheus_client import Counter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ionveil.errors import ConflictError, NotFoundError, TransientError, ValidationError
from ionveil.models import MAX_ID_LENGTH
from services.simulator import (
    PolicyScenario,
    PolicySimulator,
    SimulationResult,
    SimulationStatus,
    pattern_span_seconds,
    sweep_scenarios,
    validate_duration,
    validate_pattern,
    validate_scenario,
)
from services.simulator.engine import FailurePattern
from services.simulator.replay import pattern_from_history, replay_duration_seconds
from services.simulator.serde import (
    pattern_from_spec,
    result_from_dict,
    result_to_dict,
    scenario_from_dict,
)
from services.simulator.store import PostgresSimulationStore, SimulationStore, StoredSimulation
from workers.codec import encode_payload, parse_timestamp
from workers.runtime import (
    ConsumerSpec,
    EndpointSpec,
    Envelope,
    Request,
    Worker,
    WorkerContext,
)

__all__ = ["JOBS_SUBJECT", "RESULTS_SUBJECT", "SimulatorWorker", "results_subject"]

log = structlog.get_logger(__name__)

JOBS_SUBJECT = "ionveil.simulator.jobs"
RESULTS_SUBJECT = "ionveil.simulator.results"
_API = "ionveil.api.simulator"
_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # one subject token: ionveil.simulator.results.<id>
_TERMINAL = (SimulationStatus.COMPLETED, SimulationStatus.FAILED, SimulationStatus.CANCELLED)


def results_subject(simulation_id: str) -> str:
    """Where the finished result of ``simulation_id`` is published."""
    return f"{RESULTS_SUBJECT}.{simulation_id}"


# -- wire models (the boundary: bytes -> checked shapes; domain rules are checked after) ------
class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ScenarioIn(_In):
    """A scenario on the wire."""

    name: str = Field(min_length=1, max_length=128)
    policy_order: list[str] = Field(max_length=32)
    escalation_threshold: int
    deescalation_thresholds: dict[str, int] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def domain(self) -> PolicyScenario:
        """The ``PolicyScenario`` (validated against the engine's rules)."""
        scenario = scenario_from_dict(self.model_dump())
        problems = validate_scenario(scenario)
        if problems:
            raise ValidationError([f"scenario.{p}" for p in problems])
        return scenario


class ReplayIn(_In):
    """A replay of recorded history: an org's dispatch outcomes over ``[start, end]``."""

    org_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    start: datetime
    end: datetime

    @field_validator("start", "end", mode="before")
    @classmethod
    def _moment(cls, value: Any, info: ValidationInfo) -> datetime:
        return parse_timestamp(value, field=str(info.field_name))

    @model_validator(mode="after")
    def _ordered(self) -> ReplayIn:
        if self.end <= self.start:
            raise ValueError("end: must be after start")
        return self


class PatternIn(_In):
    """A pattern on the wire: explicit events, a generator with parameters, or a replay."""

    pattern_id: str | None = Field(default=None, max_length=128)
    description: str = Field(default="", max_length=1000)
    events: list[tuple[int, bool]] | None = None
    generator: Literal["constant", "burst", "cascade"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    replay: ReplayIn | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PatternIn:
        sources = (self.events, self.generator, self.replay)
        if sum(source is not None for source in sources) != 1:
            raise ValueError("pattern: give exactly one of events, generator or replay")
        return self

    def domain(self) -> FailurePattern:
        """The ``FailurePattern`` (generated, or explicit events validated).

        Raises:
            ValidationError: a bad pattern, or a replay (which needs the analytics database:
                ``SimulatorWorker.resolve_pattern`` builds those).
        """
        if self.replay is not None:
            raise ValidationError("pattern.replay: needs the analytics database (use the worker)")
        spec = self.model_dump(exclude_none=True)
        pattern = pattern_from_spec(spec)
        problems = validate_pattern(pattern)
        if problems:
            raise ValidationError([f"pattern.{p}" for p in problems])
        return pattern


class _NoHistory:
    """The history of an analytics database nothing was recorded in yet."""

    async def fetch_dispatch_outcomes(
        self, org_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, bool]]:
        """No outcomes at all."""
        return []


def _duration(duration: int | None, pattern: FailurePattern, default: int | None = None) -> int:
    if duration is not None:
        value = duration
    else:
        value = pattern_span_seconds(pattern) if default is None else default
    problems = validate_duration(value)
    if problems:
        raise ValidationError(problems)
    return value


class CreateIn(_In):
    """``create`` (and ``run`` without an id): what to simulate."""

    scenario: ScenarioIn
    pattern: PatternIn
    duration: int | None = Field(default=None, alias="duration_seconds")
    simulation_id: str | None = Field(default=None, pattern=_ID_PATTERN)


class RunIn(_In):
    """``run``: an existing id, or inputs to create one; ``async`` to queue it."""

    simulation_id: str | None = Field(default=None, pattern=_ID_PATTERN)
    scenario: ScenarioIn | None = None
    pattern: PatternIn | None = None
    duration: int | None = Field(default=None, alias="duration_seconds")
    run_async: bool = Field(default=False, alias="async")


class IdIn(_In):
    """``status`` and ``cancel``."""

    simulation_id: str = Field(pattern=_ID_PATTERN)


class CompareIn(_In):
    """``compare``."""

    scenarios: list[ScenarioIn] = Field(min_length=1, max_length=500)
    pattern: PatternIn
    duration: int | None = Field(default=None, alias="duration_seconds")


class RecommendIn(_In):
    """``recommend``: finished results, a sweep around ``base``, or explicit scenarios."""

    results: list[dict[str, Any]] | None = Field(default=None, max_length=5000)
    base: ScenarioIn | None = None
    scenarios: list[ScenarioIn] | None = Field(default=None, max_length=500)
    pattern: PatternIn | None = None
    patterns: list[PatternIn] | None = Field(default=None, max_length=10)
    escalation_thresholds: list[int] | None = Field(default=None, max_length=50)
    deescalation_scales: list[float] | None = Field(default=None, max_length=50)
    duration: int | None = Field(default=None, alias="duration_seconds")


class JobIn(_In):
    """A job on ``ionveil.simulator.jobs``: a stored id, or the inputs themselves."""

    simulation_id: str | None = Field(default=None, pattern=_ID_PATTERN)
    scenario: ScenarioIn | None = None
    pattern: PatternIn | None = None
    duration: int | None = Field(default=None, alias="duration_seconds")

    @model_validator(mode="after")
    def _something(self) -> JobIn:
        if self.simulation_id is None and (self.scenario is None or self.pattern is None):
            raise ValueError("job: needs simulation_id, or scenario and pattern")
        return self


# -- the worker --------------------------------------------------------------------------------
class SimulatorWorker(Worker):
    """Serves the simulator API, runs queued jobs, keeps runs in the core database.

    Args:
        max_concurrent: Simulations this replica runs at once (threads).
        store: Storage; default PostgreSQL on the core pool (given for in-process use).
        cancel_poll_s: How often running simulations check the store for a cancel request.
        max_reply_transitions: Transitions kept in replies and published results.
    """

    name = "simulator"
    databases = ("core", "analytics")
    endpoint_timeout_s = 300.0

    def __init__(
        self,
        *,
        max_concurrent: int = 4,
        store: SimulationStore | None = None,
        cancel_poll_s: float = 0.5,
        max_reply_transitions: int = 1000,
    ) -> None:
        self.simulator = PolicySimulator(max_concurrent)
        self.store: SimulationStore | None = store
        self._cancel_poll_s = cancel_poll_s
        self._max_transitions = max_reply_transitions
        self._running: set[str] = set()
        self._ctx: WorkerContext | None = None
        self._runs: Counter | None = None

    async def setup(self, ctx: WorkerContext) -> None:
        """Open the store, create its tables, register the run counter."""
        self._ctx = ctx
        if self.store is None:
            self.store = PostgresSimulationStore(ctx.pools["core"])
        await self.store.migrate()
        self._runs = Counter(
            "ionveil_simulations_total",
            "Simulations finished by this replica, by final status.",
            ["status"],
            registry=ctx.metrics.registry,
        )

    def consumers(self) -> list[ConsumerSpec]:
        """The job queue (one job per fetch, so replicas share long jobs evenly)."""
        return [
            ConsumerSpec(
                stream="SIMJOBS",
                durable="simulator-jobs",
                filter_subject=JOBS_SUBJECT,
                handler=self._on_jobs,
                model=JobIn,
                batch=1,
            )
        ]

    def endpoints(self) -> list[EndpointSpec]:
        """The six operations of ``ionveil.api.simulator``."""
        ops = {
            "create": self._create,
            "run": self._run,
            "status": self._status,
            "cancel": self._cancel,
            "compare": self._compare,
            "recommend": self._recommend,
        }
        return [EndpointSpec(name, f"{_API}.{name}", handler) for name, handler in ops.items()]

    def background(self) -> list:
        """The loop that forwards cancel requests to simulations running here."""
        return [self._watch_cancellations]

    # -- helpers ---------------------------------------------------------------------------
    @property
    def _store(self) -> SimulationStore:
        assert self.store is not None, "setup() first"
        return self.store

    def _wire(self, result: SimulationResult) -> dict[str, Any]:
        return result_to_dict(result, max_transitions=self._max_transitions)

    async def resolve_pattern(self, spec: PatternIn) -> tuple[FailurePattern, int | None]:
        """The pattern ``spec`` describes, and its default duration (``None``: its span).

        A replay reads the org's recorded outcomes from the analytics database and covers the
        whole range by default (``replay_duration_seconds``); other patterns are built as
        ``PatternIn.domain`` builds them.

        Raises:
            ValidationError: a bad pattern or range, each problem under ``pattern.``.
            TransientError: the analytics database cannot be reached.
        """
        replay = spec.replay
        if replay is None:
            return spec.domain(), None
        if self._ctx is None or "analytics" not in self._ctx.pools:
            raise TransientError("pattern.replay: no analytics database on this worker")
        try:
            try:
                pattern = await pattern_from_history(
                    self._ctx.pools["analytics"], replay.org_id, replay.start, replay.end
                )
            except asyncpg.UndefinedTableError:  # the analytics worker never ran: no history
                pattern = await pattern_from_history(
                    _NoHistory(), replay.org_id, replay.start, replay.end
                )
        except ValidationError as exc:
            raise ValidationError([f"pattern.replay.{p}" for p in exc.problems]) from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise TransientError(f"analytics database: {type(exc).__name__}: {exc}") from exc
        if spec.pattern_id:
            pattern.pattern_id = spec.pattern_id
        elif len(pattern.pattern_id) > MAX_ID_LENGTH:
            digest = hashlib.sha256(pattern.pattern_id.encode()).hexdigest()[:32]
            pattern.pattern_id = f"replay-{digest}"
        if spec.description:
            pattern.description = spec.description
        return pattern, replay_duration_seconds(replay.start, replay.end)

    async def _create_run(self, body: CreateIn | RunIn | JobIn, sim_id: str | None) -> str:
        assert body.scenario is not None and body.pattern is not None
        scenario = body.scenario.domain()
        pattern, default = await self.resolve_pattern(body.pattern)
        duration = _duration(body.duration, pattern, default)
        new_id = sim_id or uuid.uuid4().hex
        await self._store.create(new_id, scenario, pattern, duration)
        log.info("simulation_created", simulation_id=new_id, scenario=scenario.name)
        return new_id

    async def execute(self, simulation_id: str, *, takeover: bool = False) -> SimulationResult:
        """Run a stored simulation here: claim, run in a thread, store, publish.

        Raises:
            NotFoundError: unknown id.
            ConflictError: it is running elsewhere (and ``takeover`` is off).
        """
        stored = await self._store.get(simulation_id)
        if stored.status in _TERMINAL:
            return stored.result or self._cancelled_result(stored)
        if not await self._store.claim(simulation_id, takeover=takeover):
            stored = await self._store.get(simulation_id)
            if stored.status in _TERMINAL:
                return stored.result or self._cancelled_result(stored)
            raise ConflictError(f"simulation {simulation_id!r} is already running")
        if simulation_id in self._running:
            raise ConflictError(f"simulation {simulation_id!r} is already running here")
        self.simulator.create_simulation(
            stored.scenario, stored.pattern, stored.duration_seconds, simulation_id=simulation_id
        )
        self._running.add(simulation_id)
        try:
            result = await asyncio.to_thread(self.simulator.run_simulation, simulation_id)
        except asyncio.CancelledError:
            self.simulator.cancel_simulation(simulation_id)
            raise
        finally:
            self._running.discard(simulation_id)
        self.simulator.discard(simulation_id)
        await self._store.save_result(result)
        if self._runs is not None:
            self._runs.labels(result.status.value).inc()
        if self._ctx is not None:
            await self._ctx.nc.publish(
                results_subject(simulation_id), encode_payload(self._wire(result))
            )
        log.info("simulation_stored", simulation_id=simulation_id, status=result.status.value)
        return result

    def _cancelled_result(self, stored: StoredSimulation) -> SimulationResult:
        order = list(stored.scenario.policy_order)
        return SimulationResult(
            simulation_id=stored.simulation_id,
            scenario=stored.scenario,
            failure_pattern=stored.pattern,
            policy_transitions=[],
            final_policy=order[0],
            total_escalations=0,
            total_deescalations=0,
            time_in_each_policy=dict.fromkeys(order, 0.0),
            sla_compliance_rate=1.0,
            status=stored.status,
            error_message=stored.error_message or "cancelled before it started",
            duration_seconds=stored.duration_seconds,
        )

    async def _watch_cancellations(self) -> None:
        while True:
            await asyncio.sleep(self._cancel_poll_s)
            if not self._running:
                continue
            for sim_id in await self._store.cancel_requested(sorted(self._running)):
                with contextlib.suppress(KeyError):
                    self.simulator.cancel_simulation(sim_id)

    # -- endpoints -------------------------------------------------------------------------
    async def _create(self, req: Request) -> dict[str, Any]:
        body = CreateIn.model_validate(req.payload)
        sim_id = await self._create_run(body, body.simulation_id)
        return {"simulation_id": sim_id, "status": SimulationStatus.PENDING.value}

    async def _run(self, req: Request) -> dict[str, Any]:
        body = RunIn.model_validate(req.payload)
        sim_id = body.simulation_id
        if body.scenario is not None and body.pattern is not None:
            sim_id = await self._create_run(body, sim_id)
        elif sim_id is None:
            raise ValidationError("simulation_id: required (or scenario and pattern)")
        if body.run_async:
            await self._store.get(sim_id)  # NotFoundError before queueing a dead job
            assert self._ctx is not None
            await self._ctx.js.publish(
                JOBS_SUBJECT,
                encode_payload({"simulation_id": sim_id}),
                headers={"Nats-Msg-Id": f"job-{sim_id}"},
            )
            return {"simulation_id": sim_id, "status": "pending", "queued": True}
        return self._wire(await self.execute(sim_id))

    async def _status(self, req: Request) -> dict[str, Any]:
        body = IdIn.model_validate(req.payload)
        stored = await self._store.get(body.simulation_id)
        return {
            "simulation_id": stored.simulation_id,
            "status": stored.status.value,
            "error_message": stored.error_message,
            "duration_seconds": stored.duration_seconds,
            "scenario": stored.scenario.name,
            "pattern_id": stored.pattern.pattern_id,
            "created_at": stored.created_at,
            "updated_at": stored.updated_at,
            "result": self._wire(stored.result) if stored.result is not None else None,
        }

    async def _cancel(self, req: Request) -> dict[str, Any]:
        body = IdIn.model_validate(req.payload)
        status = await self._store.request_cancel(body.simulation_id)
        if body.simulation_id in self._running:
            self.simulator.cancel_simulation(body.simulation_id)
        cancelled = status in (SimulationStatus.CANCELLED, SimulationStatus.RUNNING)
        return {"simulation_id": body.simulation_id, "cancelled": cancelled, "status": status.value}

    def _compare_now(
        self, scenarios: list[PolicyScenario], pattern: FailurePattern, duration: int
    ) -> dict[str, SimulationResult]:
        results = self.simulator.compare_scenarios(scenarios, pattern, duration_seconds=duration)
        for result in results.values():
            self.simulator.discard(result.simulation_id)
        return results

    async def _compare(self, req: Request) -> dict[str, Any]:
        body = CompareIn.model_validate(req.payload)
        scenarios = [s.domain() for s in body.scenarios]
        pattern, default = await self.resolve_pattern(body.pattern)
        results = await asyncio.to_thread(
            self._compare_now, scenarios, pattern, _duration(body.duration, pattern, default)
        )
        return {"results": {name: self._wire(r) for name, r in results.items()}}

    async def _recommend(self, req: Request) -> dict[str, Any]:
        body = RecommendIn.model_validate(req.payload)
        if body.results is not None:
            results = [result_from_dict(r) for r in body.results]
            return self.simulator.generate_recommendation(results)
        specs = body.patterns or ([body.pattern] if body.pattern else [])
        patterns = [await self.resolve_pattern(p) for p in specs]
        if not patterns:
            raise ValidationError("patterns: give results, or scenarios/base and patterns")
        if body.base is not None:
            scenarios = sweep_scenarios(
                body.base.domain(), body.escalation_thresholds, body.deescalation_scales
            )
        elif body.scenarios:
            scenarios = [s.domain() for s in body.scenarios]
        else:
            raise ValidationError("scenarios: give results, base or scenarios")

        def sweep() -> dict[str, Any]:
            collected: list[SimulationResult] = []
            for pattern, default in patterns:
                duration = _duration(body.duration, pattern, default)
                collected.extend(self._compare_now(scenarios, pattern, duration).values())
            return self.simulator.generate_recommendation(collected)

        return await asyncio.to_thread(sweep)

    # -- job queue -------------------------------------------------------------------------
    async def _on_jobs(self, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            job: JobIn = env.data
            try:
                sim_id = job.simulation_id
                if job.scenario is not None and job.pattern is not None:
                    sim_id = sim_id or env.msg_id or f"job-{env.stream_seq}"
                    with contextlib.suppress(ConflictError):  # a redelivery: already stored
                        await self._create_run(job, sim_id)
                assert sim_id is not None
                await self.execute(sim_id, takeover=env.num_delivered > 1)
            except (ValidationError, NotFoundError) as exc:
                log.warning("simulation_job_rejected", reason=str(exc))
                env.reject(str(exc))

"""
IonVeil Policy Simulator Service
================================
Simulates policy changes in a sandboxed environment to predict system
behavior under various failure scenarios before production deployment.

Every simulation drives a private instance of the real ``ionveil.policy.PolicyEngine`` through
``record_many`` with virtual timestamps (the pattern's offsets, in seconds), in chunks, so what
is simulated is exactly what production does and a cancellation is honoured between chunks.
The meaning of every figure in a ``SimulationResult`` is defined in ``services.simulator._run``
and repeated on ``SimulationResult`` below.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import structlog

from ionveil.errors import ConflictError, NotFoundError, ValidationError
from ionveil.policy import DEFAULT_DEESCALATION_THRESHOLDS as _DEFAULT_DEESC
from ionveil.policy import DEFAULT_ESCALATION_THRESHOLD as _DEFAULT_THRESHOLD
from ionveil.policy import DEFAULT_POLICY_ORDER as _DEFAULT_ORDER
from services.simulator import _patterns
from services.simulator._parallel import run_many
from services.simulator._recommend import Priorities, recommend
from services.simulator._run import (
    DEFAULT_BURST_MIN_FAILURES,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FLAP_WINDOW_S,
    DEFAULT_MITIGATION_WEIGHT,
    DEFAULT_RESTRICTION_COST,
    Progress,
    RunOutcome,
    execute,
)
from services.simulator._validation import (
    validate_duration,
    validate_pattern,
    validate_scenario,
)

__all__ = [
    "FailurePattern",
    "FailurePatternGenerator",
    "PolicyScenario",
    "PolicySimulator",
    "ScenarioBuilder",
    "SimulationResult",
    "SimulationStatus",
    "pattern_span_seconds",
    "validate_duration",
    "validate_pattern",
    "validate_scenario",
]

log = structlog.get_logger(__name__)

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""Simulation ids are one NATS subject token (``ionveil.simulator.results.<id>``)."""


class SimulationStatus(str, Enum):
    """Where a simulation is in its life: pending -> running -> completed | failed | cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class PolicyScenario:
    """Defines a policy configuration to simulate."""

    name: str
    policy_order: list[str]  # e.g., ["normal", "watch", "restricted", "halted"]
    escalation_threshold: int  # failure_burst count to trigger escalation
    deescalation_thresholds: dict[str, int]  # policy -> success_streak required
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class FailurePattern:
    """Defines a pattern of failures/successes to inject.

    ``events`` are ``(timestamp_offset_seconds, is_success)``: whole seconds >= 0, so several
    events may share an offset. They need not be sorted (the simulator sorts them stably).
    """

    pattern_id: str
    events: list[tuple[int, bool]]  # (timestamp_offset_seconds, is_success)
    description: str = ""


@dataclass
class SimulationResult:
    """Results of a policy simulation run.

    * ``policy_transitions``: ``{from, to, timestamp, reason, sequence}`` in order, where
      ``timestamp`` is the virtual offset in seconds of the event that caused the move and
      ``sequence`` its 1-based index among the processed events.
    * ``time_in_each_policy``: seconds per policy (every policy of the order, 0.0 if never
      entered); sums to the simulated duration.
    * ``sla_compliance_rate``: ``(S1 + (1 - c) * Sr + w * Fr) / processed`` in [0, 1]. A
      success is a met SLA. ``S1``: successes under the first policy; ``Sr``/``Fr``: successes
      and failures under any other (restrictive) policy. A restrictive policy mitigates a
      failure with weight ``w`` (default 0.5) and costs a success ``c`` (default 0.1: shed or
      delayed lower-priority work); failures under the first policy count 0. Restriction pays
      off while the failure rate exceeds ``c / (w + c)``, so a policy that escalates promptly
      on bursts and de-escalates after them scores best. 1.0 when no event was processed.
    * ``metrics`` (an addition to the contract): events processed/ignored, per-policy counts,
      restrictive seconds, flaps, failure bursts and detection delays (see ``_run``).
    """

    simulation_id: str
    scenario: PolicyScenario
    failure_pattern: FailurePattern
    policy_transitions: list[dict[str, Any]]  # [{from, to, timestamp, reason}]
    final_policy: str
    total_escalations: int
    total_deescalations: int
    time_in_each_policy: dict[str, float]  # policy -> seconds
    sla_compliance_rate: float  # 0.0 - 1.0
    status: SimulationStatus
    error_message: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    duration_seconds: int = 0


def pattern_span_seconds(pattern: FailurePattern) -> int:
    """The pattern's own length: last offset + 1 second (1 for an empty pattern)."""
    return max((e[0] for e in pattern.events), default=0) + 1


@dataclass
class _Run:
    """A simulation's registry entry (guarded by the simulator's lock)."""

    scenario: PolicyScenario
    pattern: FailurePattern
    duration_seconds: int
    status: SimulationStatus = SimulationStatus.PENDING
    claimed: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    result: SimulationResult | None = None


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ValidationError(problems)


class PolicySimulator:
    """
    Simulates policy behavior under various failure scenarios.

    Thread-safe implementation that can run multiple simulations
    concurrently without affecting production policy state.

    A ``threading.Lock`` guards the registry of simulations; a ``threading.BoundedSemaphore``
    of ``max_concurrent`` slots bounds the runs in progress (a further ``run_simulation`` waits
    for a slot). States: pending -> running -> completed | failed | cancelled.
    """

    def __init__(
        self,
        max_concurrent: int = 10,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        mitigation_weight: float = DEFAULT_MITIGATION_WEIGHT,
        restriction_cost: float = DEFAULT_RESTRICTION_COST,
        burst_min_failures: int = DEFAULT_BURST_MIN_FAILURES,
        flap_window_s: float = DEFAULT_FLAP_WINDOW_S,
        parallel_min_events: int = 2_000_000,
        max_workers: int | None = None,
    ) -> None:
        """
        Initialize the policy simulator.

        Args:
            max_concurrent: Maximum number of concurrent simulations.
            chunk_size: Events fed to the engine between two cancellation checks.
            mitigation_weight: Credit of a failure under a restrictive policy in the
                compliance rate (see ``SimulationResult``).
            restriction_cost: Credit lost by a success under a restrictive policy.
            burst_min_failures: Consecutive failures that make a failure burst.
            flap_window_s: An escalation reversed within this many seconds is a flap.
            parallel_min_events: ``compare_scenarios`` uses a process pool when scenarios x
                events reaches this many (and there is more than one CPU).
            max_workers: Process-pool size (default: the CPU count).
        """
        problems = []
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            problems.append(f"max_concurrent: must be an integer >= 1, got {max_concurrent!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            problems.append(f"chunk_size: must be an integer >= 1, got {chunk_size!r}")
        if not 0.0 <= mitigation_weight <= 1.0:
            problems.append(f"mitigation_weight: must be in [0, 1], got {mitigation_weight!r}")
        if not 0.0 <= restriction_cost <= 1.0:
            problems.append(f"restriction_cost: must be in [0, 1], got {restriction_cost!r}")
        if not isinstance(burst_min_failures, int) or burst_min_failures < 1:
            problems.append(
                f"burst_min_failures: must be an integer >= 1, got {burst_min_failures!r}"
            )
        if not flap_window_s >= 0:
            problems.append(f"flap_window_s: must be >= 0, got {flap_window_s!r}")
        _raise_if(problems)
        self.max_concurrent = max_concurrent
        self._options = {
            "chunk_size": chunk_size,
            "mitigation_weight": float(mitigation_weight),
            "restriction_cost": float(restriction_cost),
            "burst_min_failures": burst_min_failures,
            "flap_window_s": float(flap_window_s),
        }
        self._parallel_min_events = parallel_min_events
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._runs: dict[str, _Run] = {}
        self._running = 0
        self._peak_running = 0

    # -- registry ------------------------------------------------------------------------
    def create_simulation(
        self,
        scenario: PolicyScenario,
        failure_pattern: FailurePattern,
        duration_seconds: int = 3600,
        *,
        simulation_id: str | None = None,
    ) -> str:
        """
        Create a new simulation run.

        Args:
            scenario: The policy configuration to test.
            failure_pattern: The failure/success pattern to inject.
            duration_seconds: How long to simulate (virtual time); events at offsets past it
                are ignored.
            simulation_id: Use this id instead of a new UUID (the NATS worker passes the id
                it stored).

        Returns:
            Unique simulation ID.

        Raises:
            ValidationError: the scenario, pattern or duration is invalid (all problems).
            ConflictError: ``simulation_id`` is already registered.
        """
        _raise_if(
            validate_scenario(scenario)
            + validate_pattern(failure_pattern)
            + validate_duration(duration_seconds)
        )
        if simulation_id is not None:
            _raise_if(
                []
                if isinstance(simulation_id, str) and _ID_RE.fullmatch(simulation_id)
                else ["simulation_id: must be 1 to 128 of A-Z, a-z, 0-9, '_' and '-'"]
            )
        sim_id = simulation_id or uuid.uuid4().hex
        with self._lock:
            if sim_id in self._runs:
                raise ConflictError(f"simulation_id: {sim_id!r} already exists")
            self._runs[sim_id] = _Run(scenario, failure_pattern, duration_seconds)
        return sim_id

    def _get(self, simulation_id: str) -> _Run:
        run = self._runs.get(simulation_id)
        if run is None:
            raise NotFoundError(f"simulation {simulation_id!r} not found")
        return run

    def get_simulation_status(self, simulation_id: str) -> SimulationStatus:
        """
        Get the current status of a simulation.

        Args:
            simulation_id: ID from create_simulation().

        Returns:
            Current simulation status.

        Raises:
            KeyError: unknown ``simulation_id`` (a ``NotFoundError``).
        """
        with self._lock:
            return self._get(simulation_id).status

    def get_result(self, simulation_id: str) -> SimulationResult | None:
        """The finished result of a simulation, or None while it is pending or running.

        Raises:
            KeyError: unknown ``simulation_id``.
        """
        with self._lock:
            return self._get(simulation_id).result

    def discard(self, simulation_id: str) -> None:
        """Forget a finished simulation (frees its pattern); running ones are kept.

        Raises:
            KeyError: unknown ``simulation_id``.
            RuntimeError: the simulation is running or waiting for a slot.
        """
        with self._lock:
            run = self._get(simulation_id)
            if run.claimed and run.result is None:
                raise ConflictError(f"simulation {simulation_id!r} is running")
            del self._runs[simulation_id]

    @property
    def running_count(self) -> int:
        """Simulations running now."""
        with self._lock:
            return self._running

    @property
    def peak_running(self) -> int:
        """The most simulations that have run at the same time (never above the bound)."""
        with self._lock:
            return self._peak_running

    def cancel_simulation(self, simulation_id: str) -> bool:
        """
        Cancel a running or pending simulation.

        A pending one is cancelled at once (a later ``run_simulation`` returns a cancelled
        result); a running one stops at its next chunk boundary and ends cancelled.

        Args:
            simulation_id: ID from create_simulation().

        Returns:
            True if cancelled, False if already completed.

        Raises:
            KeyError: unknown ``simulation_id``.
        """
        with self._lock:
            run = self._get(simulation_id)
            if run.status in (SimulationStatus.COMPLETED, SimulationStatus.FAILED):
                return False
            run.cancel.set()
            if run.status is SimulationStatus.PENDING:
                run.status = SimulationStatus.CANCELLED
        log.info("simulation_cancel_requested", simulation_id=simulation_id)
        return True

    # -- running -------------------------------------------------------------------------
    def _result(
        self, sim_id: str, run: _Run, outcome: RunOutcome | None, error: str | None = None
    ) -> SimulationResult:
        order = list(run.scenario.policy_order)
        if outcome is None:
            status = SimulationStatus.FAILED if error else SimulationStatus.CANCELLED
            return SimulationResult(
                simulation_id=sim_id,
                scenario=run.scenario,
                failure_pattern=run.pattern,
                policy_transitions=[],
                final_policy=order[0],
                total_escalations=0,
                total_deescalations=0,
                time_in_each_policy=dict.fromkeys(order, 0.0),
                sla_compliance_rate=1.0,
                status=status,
                error_message=error or "cancelled before it started",
                duration_seconds=run.duration_seconds,
            )
        status = SimulationStatus.CANCELLED if outcome.cancelled else SimulationStatus.COMPLETED
        processed = outcome.metrics["events_processed"]
        return SimulationResult(
            simulation_id=sim_id,
            scenario=run.scenario,
            failure_pattern=run.pattern,
            policy_transitions=outcome.policy_transitions,
            final_policy=outcome.final_policy,
            total_escalations=outcome.total_escalations,
            total_deescalations=outcome.total_deescalations,
            time_in_each_policy=outcome.time_in_each_policy,
            sla_compliance_rate=outcome.sla_compliance_rate,
            status=status,
            error_message=(f"cancelled after {processed} events" if outcome.cancelled else None),
            metrics=outcome.metrics,
            duration_seconds=run.duration_seconds,
        )

    def _claim(self, simulation_id: str) -> _Run:
        with self._lock:
            run = self._get(simulation_id)
            if run.claimed and run.result is None:
                raise ConflictError(f"simulation {simulation_id!r} is already running")
            run.claimed = True
            return run

    def run_simulation(
        self, simulation_id: str, *, progress: Progress | None = None
    ) -> SimulationResult:
        """
        Execute a simulation and return results.

        Blocks until a slot is free (at most ``max_concurrent`` run at once). Running a
        finished simulation again returns its stored result (runs are deterministic).

        Args:
            simulation_id: ID from create_simulation().
            progress: Called with ``(events_done, events_total)`` after every chunk.

        Returns:
            Complete simulation results (status completed, cancelled or failed; a failure
            carries ``error_message``).

        Raises:
            KeyError: If simulation_id not found.
            RuntimeError: If simulation already running.
        """
        run = self._claim(simulation_id)
        if run.result is not None:
            return run.result
        if run.cancel.is_set():  # cancelled while pending: no need to wait for a slot
            with self._lock:
                run.result = self._result(simulation_id, run, None)
                return run.result
        with self._slots:
            with self._lock:
                if run.cancel.is_set():
                    run.status = SimulationStatus.CANCELLED
                    run.result = self._result(simulation_id, run, None)
                    return run.result
                run.status = SimulationStatus.RUNNING
                self._running += 1
                self._peak_running = max(self._peak_running, self._running)
            log.info("simulation_started", simulation_id=simulation_id)
            outcome: RunOutcome | None = None
            error: str | None = None
            try:
                outcome = execute(
                    run.scenario.policy_order,
                    run.scenario.escalation_threshold,
                    run.scenario.deescalation_thresholds,
                    run.pattern.events,
                    run.duration_seconds,
                    cancelled=run.cancel.is_set,
                    progress=progress,
                    **self._options,
                )
            except Exception as exc:  # a failed run is a result, not a crash of the caller
                log.exception("simulation_failed", simulation_id=simulation_id)
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._running -= 1
                result = self._result(simulation_id, run, outcome, error)
                run.status = result.status
                run.result = result
        log.info("simulation_finished", simulation_id=simulation_id, status=result.status.value)
        return result

    def compare_scenarios(
        self,
        scenarios: list[PolicyScenario],
        failure_pattern: FailurePattern,
        *,
        duration_seconds: int | None = None,
    ) -> dict[str, SimulationResult]:
        """
        Run the same failure pattern against multiple scenarios for comparison.

        Each scenario becomes a registered simulation. Large comparisons (scenarios x events
        at least ``parallel_min_events``) run in a process pool on all CPUs, each process with
        its own sandboxed engines; small ones run here one after another.

        Args:
            scenarios: List of policy configurations to compare.
            failure_pattern: The failure pattern to test each against.
            duration_seconds: Virtual time to simulate; default the pattern's own span.

        Returns:
            Dict mapping scenario name to simulation result.

        Raises:
            ValidationError: no scenarios, duplicate names, or an invalid input.
        """
        problems: list[str] = []
        if not scenarios:
            problems.append("scenarios: need at least one scenario")
        names = [getattr(s, "name", None) for s in scenarios]
        dupes = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
        if dupes:
            problems.append(f"scenarios: duplicate names {dupes}")
        for i, scenario in enumerate(scenarios):
            problems.extend(f"scenarios[{i}].{p}" for p in validate_scenario(scenario))
        problems.extend(validate_pattern(failure_pattern))
        _raise_if(problems)
        duration = (
            pattern_span_seconds(failure_pattern) if duration_seconds is None else duration_seconds
        )
        ids = [self.create_simulation(s, failure_pattern, duration) for s in scenarios]
        work = len(scenarios) * len(failure_pattern.events)
        if len(scenarios) > 1 and work >= self._parallel_min_events:
            self._run_parallel(ids, failure_pattern, duration)
        results = {s.name: self.run_simulation(i) for s, i in zip(scenarios, ids, strict=True)}
        return results

    def _run_parallel(self, ids: list[str], pattern: FailurePattern, duration: int) -> None:
        """Run pending simulations in a process pool and store their results."""
        with self._lock:
            runs = [(i, self._runs[i]) for i in ids]
            for _, run in runs:
                run.claimed = True
        configs = [
            (
                r.scenario.policy_order,
                r.scenario.escalation_threshold,
                r.scenario.deescalation_thresholds,
            )
            for _, r in runs
        ]
        error: str | None = None
        outcomes: list[RunOutcome | None] = [None] * len(runs)
        try:
            outcomes = list(
                run_many(
                    configs,
                    pattern.events,
                    duration,
                    self._options,
                    max_workers=self._max_workers,
                )
            )
        except Exception as exc:  # every run of the batch fails with the reason
            log.exception("simulation_batch_failed", simulations=len(runs))
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            for (sim_id, run), outcome in zip(runs, outcomes, strict=True):
                if run.cancel.is_set():
                    run.result = self._result(sim_id, run, None)
                else:
                    run.result = self._result(sim_id, run, outcome, error)
                run.status = run.result.status

    def generate_recommendation(
        self,
        results: list[SimulationResult],
        *,
        priorities: Priorities | None = None,
    ) -> dict[str, Any]:
        """
        Analyze simulation results and generate policy recommendations.

        Scores each scenario (results of the same scenario name over several patterns are
        pooled) on SLA compliance, detection delay, flapping and time in restrictive policies,
        keeps the Pareto-optimal set and picks one by ``priorities`` (compliance first, then
        detection delay, then flapping, then restrictive time; see ``Priorities``).

        Args:
            results: List of simulation results to analyze (completed ones are scored).

        Returns:
            Recommendation dict with suggested thresholds and reasoning: ``recommended``,
            ``suggested_escalation_threshold``, ``suggested_deescalation_thresholds``,
            ``frontier``, ``scores``, ``priorities``, ``reasoning``.

        Raises:
            ValidationError: no completed result to analyze.
        """
        return recommend(
            results,
            priorities or Priorities(),
            flap_window_s=self._options["flap_window_s"],
        )


class ScenarioBuilder:
    """Fluent builder for creating PolicyScenario instances."""

    def __init__(self, name: str) -> None:
        """Start building a scenario with the given name."""
        self._name = name
        self._order: list[str] = list(_DEFAULT_ORDER)
        self._threshold = _DEFAULT_THRESHOLD
        self._deesc: dict[str, int] = {}
        self._deesc_set = False
        self._metadata: dict[str, Any] = {}

    def with_policy_order(self, order: list[str]) -> ScenarioBuilder:
        """Set the policy progression order."""
        self._order = list(order) if isinstance(order, list | tuple) else order
        return self

    def with_escalation_threshold(self, threshold: int) -> ScenarioBuilder:
        """Set the failure burst count that triggers escalation."""
        self._threshold = threshold
        return self

    def with_deescalation_threshold(self, policy: str, success_streak: int) -> ScenarioBuilder:
        """Set the success streak required to de-escalate from a policy."""
        self._deesc[policy] = success_streak
        self._deesc_set = True
        return self

    def with_metadata(self, **metadata: Any) -> ScenarioBuilder:
        """Attach free-form metadata (author, ticket, notes)."""
        self._metadata.update(metadata)
        return self

    def build(self) -> PolicyScenario:
        """Build and return the PolicyScenario.

        Without any ``with_deescalation_threshold`` call the engine's defaults for the chosen
        order apply (``ionveil.policy.DEFAULT_DEESCALATION_THRESHOLDS``).

        Raises:
            ValidationError: the scenario is invalid (every problem, each naming its field).
        """
        deesc = (
            dict(self._deesc)
            if self._deesc_set
            else {k: v for k, v in _DEFAULT_DEESC.items() if k in (self._order or [])}
        )
        scenario = PolicyScenario(
            name=self._name,
            policy_order=self._order,
            escalation_threshold=self._threshold,
            deescalation_thresholds=deesc,
            metadata=dict(self._metadata),
        )
        _raise_if(validate_scenario(scenario))
        return scenario


class FailurePatternGenerator:
    """Generate common failure patterns for testing.

    Every generator is deterministic given ``seed`` (an added keyword; ``None`` draws fresh
    randomness) and produces one event per second unless stated otherwise, offsets as whole
    seconds (several events share an offset when ``events_per_second > 1``).
    """

    @staticmethod
    def constant_failure_rate(
        rate: float,
        duration_seconds: int,
        events_per_second: float = 1.0,
        *,
        seed: int | None = None,
    ) -> FailurePattern:
        """
        Generate a pattern with constant failure rate.

        Args:
            rate: Failure rate (0.0 - 1.0): each event fails independently with it.
            duration_seconds: Total duration of the pattern.
            events_per_second: How many events occur per second (event ``i`` at
                ``int(i / events_per_second)``).
            seed: Makes the pattern reproducible.

        Returns:
            FailurePattern with uniformly distributed failures.
        """
        events = _patterns.constant_events(rate, duration_seconds, events_per_second, seed=seed)
        return FailurePattern(
            pattern_id=f"constant-{rate}-{duration_seconds}-{events_per_second}-{seed}",
            events=events,
            description=(
                f"constant failure rate {rate} over {duration_seconds} s, "
                f"{events_per_second} events/s, seed {seed}"
            ),
        )

    @staticmethod
    def burst_failure(
        burst_size: int,
        burst_interval_seconds: int,
        duration_seconds: int,
        *,
        seed: int | None = None,
    ) -> FailurePattern:
        """
        Generate a pattern with periodic failure bursts.

        One event per second; each interval starts with ``burst_size`` consecutive failures
        (with a ``seed``, shifted reproducibly within the interval), every other event succeeds.

        Args:
            burst_size: Number of consecutive failures per burst.
            burst_interval_seconds: Time between burst starts.
            duration_seconds: Total duration of the pattern.
            seed: Jitters the burst starts reproducibly; None keeps them on the interval.

        Returns:
            FailurePattern with periodic bursts.
        """
        events = _patterns.burst_events(
            burst_size, burst_interval_seconds, duration_seconds, seed=seed
        )
        return FailurePattern(
            pattern_id=f"burst-{burst_size}-{burst_interval_seconds}-{duration_seconds}-{seed}",
            events=events,
            description=(
                f"bursts of {burst_size} failures every {burst_interval_seconds} s over "
                f"{duration_seconds} s, seed {seed}"
            ),
        )

    @staticmethod
    def cascading_failure(
        initial_rate: float,
        escalation_factor: float,
        recovery_after_seconds: int,
        duration_seconds: int,
        *,
        events_per_second: float = 1.0,
        seed: int | None = None,
    ) -> FailurePattern:
        """
        Generate a pattern simulating cascading failures with eventual recovery.

        The failure rate is multiplied by ``escalation_factor`` every 60 s interval (capped at
        1.0) until ``recovery_after_seconds``, then divided by it every interval until it is
        back at ``initial_rate`` (``services.simulator._patterns.cascade_rate``).

        Args:
            initial_rate: Starting failure rate.
            escalation_factor: How much failure rate increases per interval.
            recovery_after_seconds: When recovery begins.
            duration_seconds: Total duration of the pattern.
            events_per_second: How many events occur per second.
            seed: Makes the pattern reproducible.

        Returns:
            FailurePattern simulating cascade and recovery.
        """
        events = _patterns.cascade_events(
            initial_rate,
            escalation_factor,
            recovery_after_seconds,
            duration_seconds,
            events_per_second=events_per_second,
            seed=seed,
        )
        return FailurePattern(
            pattern_id=(
                f"cascade-{initial_rate}-{escalation_factor}-{recovery_after_seconds}-"
                f"{duration_seconds}-{seed}"
            ),
            events=events,
            description=(
                f"cascading failures from rate {initial_rate} x{escalation_factor} per 60 s, "
                f"recovery after {recovery_after_seconds} s, over {duration_seconds} s"
            ),
        )

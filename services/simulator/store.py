"""Where simulations last: scenarios, runs and results in the core database.

``SimulationStore`` is what the NATS worker needs; ``PostgresSimulationStore`` keeps it in
PostgreSQL (asyncpg, parameterised queries, schema created idempotently with unqualified table
names) so status and results survive a worker restart and every replica sees the same runs;
``InMemorySimulationStore`` serves tests and in-process use. A run's pattern is stored with it
(MessagePack bytes), its result as JSON with the pattern summarised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import msgpack

from ionveil.errors import ConflictError, NotFoundError
from services.simulator.engine import (
    FailurePattern,
    PolicyScenario,
    SimulationResult,
    SimulationStatus,
)
from services.simulator.serde import (
    result_from_dict,
    result_to_dict,
    scenario_from_dict,
    scenario_to_dict,
)

__all__ = [
    "InMemorySimulationStore",
    "PostgresSimulationStore",
    "SimulationStore",
    "StoredSimulation",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS simulator_scenarios (
    name TEXT PRIMARY KEY,
    body JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS simulator_runs (
    simulation_id TEXT PRIMARY KEY,
    scenario JSONB NOT NULL,
    pattern_id TEXT NOT NULL,
    pattern_description TEXT NOT NULL DEFAULT '',
    pattern_events BYTEA NOT NULL,
    duration_seconds BIGINT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    result JSONB,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS simulator_runs_created ON simulator_runs (created_at DESC);
"""


@dataclass(frozen=True)
class StoredSimulation:
    """One run as stored: its inputs, state and (when finished) result."""

    simulation_id: str
    scenario: PolicyScenario
    pattern: FailurePattern
    duration_seconds: int
    status: SimulationStatus
    error_message: str | None = None
    result: SimulationResult | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class SimulationStore(Protocol):
    """The storage port of the simulator worker."""

    async def migrate(self) -> None:
        """Create the schema if it is missing (idempotent)."""

    async def create(
        self,
        simulation_id: str,
        scenario: PolicyScenario,
        pattern: FailurePattern,
        duration_seconds: int,
    ) -> None:
        """Store a new pending run; ``ConflictError`` when the id exists."""

    async def get(self, simulation_id: str) -> StoredSimulation:
        """The run; ``NotFoundError`` (a ``KeyError``) when unknown."""

    async def set_status(
        self, simulation_id: str, status: SimulationStatus, error_message: str | None = None
    ) -> None:
        """Move a run to ``status``; ``NotFoundError`` when unknown."""

    async def save_result(self, result: SimulationResult) -> None:
        """Store a finished result and its status; ``NotFoundError`` when unknown."""

    async def claim(self, simulation_id: str, *, takeover: bool = False) -> bool:
        """Pending (or, with ``takeover``, running) -> running; False when not claimable."""

    async def request_cancel(self, simulation_id: str) -> SimulationStatus:
        """Pending -> cancelled; running -> flagged for its replica; returns the status."""

    async def cancel_requested(self, simulation_ids: list[str]) -> set[str]:
        """Which of these running simulations were asked to cancel."""

    async def list_recent(self, limit: int = 50) -> list[StoredSimulation]:
        """The newest runs first (without results' patterns' events)."""

    async def save_scenario(self, scenario: PolicyScenario) -> None:
        """Store (or replace) a named scenario."""

    async def get_scenario(self, name: str) -> PolicyScenario:
        """A named scenario; ``NotFoundError`` when unknown."""


def _pack_events(events: list[tuple[int, bool]]) -> bytes:
    return msgpack.packb(events, use_bin_type=True)


def _unpack_events(data: bytes) -> list[tuple[int, bool]]:
    return [(o, s) for o, s in msgpack.unpackb(data, raw=False)]


def _with_pattern(result: SimulationResult | None, pattern: FailurePattern) -> Any:
    return None if result is None else replace(result, failure_pattern=pattern)


class InMemorySimulationStore:
    """``SimulationStore`` in a dict (one process; nothing survives it)."""

    def __init__(self) -> None:
        self._runs: dict[str, StoredSimulation] = {}
        self._scenarios: dict[str, PolicyScenario] = {}
        self._cancel: set[str] = set()

    async def migrate(self) -> None:
        """Nothing to create."""

    async def create(
        self,
        simulation_id: str,
        scenario: PolicyScenario,
        pattern: FailurePattern,
        duration_seconds: int,
    ) -> None:
        """Store a new pending run."""
        if simulation_id in self._runs:
            raise ConflictError(f"simulation_id: {simulation_id!r} already exists")
        now = datetime.now(UTC)
        self._runs[simulation_id] = StoredSimulation(
            simulation_id,
            scenario,
            pattern,
            duration_seconds,
            SimulationStatus.PENDING,
            created_at=now,
            updated_at=now,
        )

    async def get(self, simulation_id: str) -> StoredSimulation:
        """The run."""
        try:
            return self._runs[simulation_id]
        except KeyError:
            raise NotFoundError(f"simulation {simulation_id!r} not found") from None

    async def set_status(
        self, simulation_id: str, status: SimulationStatus, error_message: str | None = None
    ) -> None:
        """Move a run to ``status``."""
        run = await self.get(simulation_id)
        self._runs[simulation_id] = replace(
            run, status=status, error_message=error_message, updated_at=datetime.now(UTC)
        )

    async def save_result(self, result: SimulationResult) -> None:
        """Store a finished result."""
        run = await self.get(result.simulation_id)
        self._runs[result.simulation_id] = replace(
            run,
            status=result.status,
            error_message=result.error_message,
            result=_with_pattern(result, run.pattern),
            updated_at=datetime.now(UTC),
        )

    async def claim(self, simulation_id: str, *, takeover: bool = False) -> bool:
        """Pending (or running, with ``takeover``) -> running."""
        run = await self.get(simulation_id)
        allowed = {SimulationStatus.PENDING} | ({SimulationStatus.RUNNING} if takeover else set())
        if run.status not in allowed:
            return False
        await self.set_status(simulation_id, SimulationStatus.RUNNING)
        return True

    async def request_cancel(self, simulation_id: str) -> SimulationStatus:
        """Pending -> cancelled; running -> flagged."""
        run = await self.get(simulation_id)
        if run.status is SimulationStatus.PENDING:
            await self.set_status(simulation_id, SimulationStatus.CANCELLED, "cancelled")
            return SimulationStatus.CANCELLED
        if run.status is SimulationStatus.RUNNING:
            self._cancel.add(simulation_id)
        return run.status

    async def cancel_requested(self, simulation_ids: list[str]) -> set[str]:
        """Which of these were asked to cancel."""
        return self._cancel.intersection(simulation_ids)

    async def list_recent(self, limit: int = 50) -> list[StoredSimulation]:
        """The newest runs first."""
        runs = sorted(self._runs.values(), key=lambda r: r.created_at or 0, reverse=True)
        return runs[:limit]

    async def save_scenario(self, scenario: PolicyScenario) -> None:
        """Store a named scenario."""
        self._scenarios[scenario.name] = scenario

    async def get_scenario(self, name: str) -> PolicyScenario:
        """A named scenario."""
        try:
            return self._scenarios[name]
        except KeyError:
            raise NotFoundError(f"scenario {name!r} not found") from None


class PostgresSimulationStore:
    """``SimulationStore`` on an asyncpg pool of the core database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def migrate(self) -> None:
        """Create the tables if missing."""
        async with self._pool.acquire() as conn:
            await conn.execute(_SCHEMA)

    async def create(
        self,
        simulation_id: str,
        scenario: PolicyScenario,
        pattern: FailurePattern,
        duration_seconds: int,
    ) -> None:
        """Store a new pending run."""
        try:
            await self._pool.execute(
                """INSERT INTO simulator_runs (simulation_id, scenario, pattern_id,
                       pattern_description, pattern_events, duration_seconds, status)
                   VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7)""",
                simulation_id,
                json.dumps(scenario_to_dict(scenario)),
                pattern.pattern_id,
                pattern.description,
                _pack_events(pattern.events),
                duration_seconds,
                SimulationStatus.PENDING.value,
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError(f"simulation_id: {simulation_id!r} already exists") from None

    def _row(self, row: asyncpg.Record, *, with_events: bool = True) -> StoredSimulation:
        pattern = FailurePattern(
            pattern_id=row["pattern_id"],
            events=_unpack_events(row["pattern_events"]) if with_events else [],
            description=row["pattern_description"],
        )
        result = result_from_dict(json.loads(row["result"])) if row["result"] is not None else None
        return StoredSimulation(
            simulation_id=row["simulation_id"],
            scenario=scenario_from_dict(json.loads(row["scenario"])),
            pattern=pattern,
            duration_seconds=int(row["duration_seconds"]),
            status=SimulationStatus(row["status"]),
            error_message=row["error_message"],
            result=_with_pattern(result, pattern),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def get(self, simulation_id: str) -> StoredSimulation:
        """The run."""
        row = await self._pool.fetchrow(
            "SELECT * FROM simulator_runs WHERE simulation_id = $1", simulation_id
        )
        if row is None:
            raise NotFoundError(f"simulation {simulation_id!r} not found")
        return self._row(row)

    async def _update(self, query: str, simulation_id: str, *args: Any) -> None:
        status = await self._pool.execute(query, simulation_id, *args)
        if status.endswith(" 0"):
            raise NotFoundError(f"simulation {simulation_id!r} not found")

    async def set_status(
        self, simulation_id: str, status: SimulationStatus, error_message: str | None = None
    ) -> None:
        """Move a run to ``status``."""
        await self._update(
            """UPDATE simulator_runs SET status = $2, error_message = $3, updated_at = now()
               WHERE simulation_id = $1""",
            simulation_id,
            status.value,
            error_message,
        )

    async def save_result(self, result: SimulationResult) -> None:
        """Store a finished result (pattern summarised; the events stay in the run row)."""
        await self._update(
            """UPDATE simulator_runs SET status = $2, error_message = $3, result = $4::jsonb,
                   updated_at = now()
               WHERE simulation_id = $1""",
            result.simulation_id,
            result.status.value,
            result.error_message,
            json.dumps(result_to_dict(result)),
        )

    async def claim(self, simulation_id: str, *, takeover: bool = False) -> bool:
        """Pending (or running, with ``takeover``) -> running, atomically."""
        claimed = await self._pool.fetchval(
            """UPDATE simulator_runs SET status = 'running', updated_at = now()
               WHERE simulation_id = $1 AND (status = 'pending' OR ($2 AND status = 'running'))
               RETURNING true""",
            simulation_id,
            takeover,
        )
        if claimed:
            return True
        await self.get(simulation_id)  # NotFoundError when unknown
        return False

    async def request_cancel(self, simulation_id: str) -> SimulationStatus:
        """Pending -> cancelled; running -> flagged for the replica running it."""
        status = await self._pool.fetchval(
            """UPDATE simulator_runs SET
                   status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
                   error_message = CASE WHEN status = 'pending' THEN 'cancelled'
                                        ELSE error_message END,
                   cancel_requested = cancel_requested OR status = 'running',
                   updated_at = now()
               WHERE simulation_id = $1 RETURNING status""",
            simulation_id,
        )
        if status is None:
            raise NotFoundError(f"simulation {simulation_id!r} not found")
        return SimulationStatus(status)

    async def cancel_requested(self, simulation_ids: list[str]) -> set[str]:
        """Which of these running simulations were asked to cancel."""
        rows = await self._pool.fetch(
            """SELECT simulation_id FROM simulator_runs
               WHERE simulation_id = ANY($1::text[]) AND cancel_requested""",
            list(simulation_ids),
        )
        return {r["simulation_id"] for r in rows}

    async def list_recent(self, limit: int = 50) -> list[StoredSimulation]:
        """The newest runs first, without their patterns' events."""
        rows = await self._pool.fetch(
            """SELECT simulation_id, scenario, pattern_id, pattern_description,
                      ''::bytea AS pattern_events, duration_seconds, status, error_message,
                      result, created_at, updated_at
               FROM simulator_runs ORDER BY created_at DESC, simulation_id LIMIT $1""",
            max(1, min(int(limit), 1000)),
        )
        return [self._row(r, with_events=False) for r in rows]

    async def save_scenario(self, scenario: PolicyScenario) -> None:
        """Store (or replace) a named scenario."""
        await self._pool.execute(
            """INSERT INTO simulator_scenarios (name, body) VALUES ($1, $2::jsonb)
               ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, updated_at = now()""",
            scenario.name,
            json.dumps(scenario_to_dict(scenario)),
        )

    async def get_scenario(self, name: str) -> PolicyScenario:
        """A named scenario."""
        body = await self._pool.fetchval(
            "SELECT body FROM simulator_scenarios WHERE name = $1", name
        )
        if body is None:
            raise NotFoundError(f"scenario {name!r} not found")
        return scenario_from_dict(json.loads(body))

"""``MetricsCollector``: response-time records in the analytics database, and their statistics.

Records are kept one per (org, incident), so a redelivered event never counts twice. Whether a
record met its SLA is the verdict its source reported (``ResponseRecord.reported_sla_met``, the
``sla_met`` column) or, when none was given, its response time against
``SLA_BY_SEVERITY[priority]``. Statistics are exact, computed with ``ionveil.statistics``;
``stream_metrics`` reads any number of rows with a server-side cursor in bounded memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from ionveil import statistics
from ionveil.errors import ValidationError
from ionveil.models import SLA_BY_SEVERITY
from services.analytics.models import ResponseRecord, check_range, validate_record

__all__ = ["MAX_BATCH_SIZE", "MetricsCollector"]

log = structlog.get_logger(__name__)

MAX_BATCH_SIZE = 10_000
"""Largest ``batch_size`` (rows prefetched per round trip) ``stream_metrics`` accepts."""

_SCHEMA = """
SELECT pg_advisory_xact_lock(hashtext('ionveil.response_metrics:' || current_schema()));
CREATE TABLE IF NOT EXISTS response_metrics (
    id                    bigserial PRIMARY KEY,
    org_id                text NOT NULL,
    incident_id           text NOT NULL,
    priority              smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
    response_time_minutes double precision NOT NULL CHECK (response_time_minutes >= 0),
    region                text NOT NULL DEFAULT '',
    recorded_at           timestamptz NOT NULL,
    UNIQUE (org_id, incident_id)
);
CREATE INDEX IF NOT EXISTS response_metrics_org_time_idx
    ON response_metrics (org_id, recorded_at, id);
-- The source's own SLA verdict (NULL: derived from the priority's target).
ALTER TABLE response_metrics ADD COLUMN IF NOT EXISTS sla_met boolean;
"""

_COLUMNS = "org_id, incident_id, priority, response_time_minutes, region, recorded_at, sla_met"

_INSERT = f"""
WITH inserted AS (
    INSERT INTO response_metrics ({_COLUMNS})
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::smallint[], $4::double precision[], $5::text[],
        $6::timestamptz[], $7::boolean[]
    )
    ON CONFLICT (org_id, incident_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

_RANGE = (
    "org_id = $1 AND ($2::timestamptz IS NULL OR recorded_at >= $2) "
    "AND ($3::timestamptz IS NULL OR recorded_at < $3)"
)

_PERCENTILES = (50, 90, 95, 99)


def _record(row: asyncpg.Record) -> ResponseRecord:
    return ResponseRecord(
        org_id=row["org_id"],
        incident_id=row["incident_id"],
        priority=row["priority"],
        response_time_minutes=row["response_time_minutes"],
        region=row["region"],
        recorded_at=row["recorded_at"],
        reported_sla_met=row["sla_met"],
    )


def _met(row: asyncpg.Record) -> bool:
    """The row's stored SLA verdict, or the one derived from its priority's target."""
    if row["sla_met"] is not None:
        return bool(row["sla_met"])
    return bool(row["response_time_minutes"] <= SLA_BY_SEVERITY[row["priority"]])


def _summary(values: list[float]) -> dict[str, Any]:
    """count, mean, min, max and p50/p90/p95/p99 of ``values`` (``None`` when empty)."""
    if not values:
        return {"count": 0, "mean": None, "min": None, "max": None} | {
            f"p{p}": None for p in _PERCENTILES
        }
    out: dict[str, Any] = {
        "count": len(values),
        "mean": statistics.mean(values),
        "min": min(values),
        "max": max(values),
    }
    for p in _PERCENTILES:
        out[f"p{p}"] = statistics.percentile(values, p)
    return out


def _check_org(org_id: object) -> None:
    if not isinstance(org_id, str) or not org_id.strip():
        raise ValidationError("org_id: must be a non-empty string")


class MetricsCollector:
    """Records response times and answers statistics over them, per org.

    Args:
        pool: an asyncpg pool on the analytics database.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def migrate(self) -> None:
        """Create the table and index (idempotent, safe to run from several processes)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_SCHEMA)

    async def record_response(
        self,
        org_id: str,
        incident_id: str,
        priority: int,
        response_time_minutes: float,
        region: str = "",
        recorded_at: datetime | None = None,
    ) -> bool:
        """Record one response; ``recorded_at`` defaults to now.

        Returns:
            True when recorded, False when this org already has a record for the incident.

        Raises:
            ValidationError: a field breaks a rule (named in the message).
        """
        record = ResponseRecord(
            org_id,
            incident_id,
            priority,
            response_time_minutes,
            region,
            recorded_at if recorded_at is not None else datetime.now(UTC),
        )
        return await self.record_many([record]) == 1

    async def record_many(self, records: Iterable[ResponseRecord]) -> int:
        """Record many responses in one statement; repeats of a known incident are skipped.

        All records are validated first: one bad record writes none.

        Returns:
            How many were new.

        Raises:
            ValidationError: every problem, each prefixed with ``records[i].``.
        """
        batch = list(records)
        problems: list[str] = []
        for i, record in enumerate(batch):
            if not isinstance(record, ResponseRecord):
                problems.append(f"records[{i}]: must be a ResponseRecord")
            else:
                problems.extend(validate_record(record, f"records[{i}]."))
        if problems:
            raise ValidationError(problems)
        if not batch:
            return 0
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for r in batch:
            for column, value in zip(
                columns,
                (
                    r.org_id,
                    r.incident_id,
                    r.priority,
                    float(r.response_time_minutes),
                    r.region,
                    r.recorded_at,
                    r.reported_sla_met,
                ),
                strict=True,
            ):
                column.append(value)
        inserted: int = await self._pool.fetchval(_INSERT, *columns)
        if inserted < len(batch):
            log.debug("response_metrics_duplicates", skipped=len(batch) - inserted)
        return inserted

    async def calculate_statistics(
        self, org_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, Any]:
        """Exact response-time statistics of one org over ``[since, until)``.

        Returns:
            ``{"org_id", "since", "until", "count", "mean", "min", "max", "p50", "p90", "p95",
            "p99", "sla_compliance_rate", "by_priority": {priority: {count, mean, min, max,
            p50, p90, p95, p99, sla_compliance_rate}}}``; minutes throughout. With no records,
            count is 0, the figures are ``None`` and the compliance rate is 1.0 (nothing
            missed); ``by_priority`` lists only priorities that have records.

        Raises:
            ValidationError: empty org, naive bounds, or ``until`` before ``since``.
        """
        _check_org(org_id)
        check_range(since, until)
        rows = await self._pool.fetch(
            f"SELECT priority, response_time_minutes, sla_met FROM response_metrics WHERE {_RANGE}",
            org_id,
            since,
            until,
        )
        values = [row["response_time_minutes"] for row in rows]
        per_priority: dict[int, list[float]] = defaultdict(list)
        met: dict[int, int] = defaultdict(int)
        for row in rows:
            record_priority = row["priority"]
            value = row["response_time_minutes"]
            per_priority[record_priority].append(value)
            if _met(row):
                met[record_priority] += 1
        by_priority = {}
        for priority in sorted(per_priority, reverse=True):
            group = per_priority[priority]
            by_priority[priority] = _summary(group) | {
                "sla_compliance_rate": met[priority] / len(group)
            }
        total_met = sum(met.values())
        return {
            "org_id": org_id,
            "since": since,
            "until": until,
            **_summary(values),
            "sla_compliance_rate": total_met / len(values) if values else 1.0,
            "by_priority": by_priority,
        }

    def stream_metrics(
        self,
        org_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_size: int = 500,
    ) -> AsyncIterator[ResponseRecord]:
        """Every record of one org over ``[since, until)``, oldest first, in bounded memory.

        Rows come from a server-side cursor inside a read-only REPEATABLE READ transaction
        (one consistent snapshot), ``batch_size`` rows per round trip. The transaction is
        closed and the connection returned to the pool when iteration ends, when the consumer
        raises, or when the iterator is closed early. Use ``contextlib.aclosing`` (or call
        ``aclose()``) to close it at a known point when breaking out early; an abandoned
        iterator is otherwise closed by the event loop when it is garbage collected.

        Arguments are checked at the call, before any iteration.

        Raises:
            ValidationError: empty org, naive bounds, ``until`` before ``since``, or a
                ``batch_size`` outside 1..``MAX_BATCH_SIZE``.
        """
        _check_org(org_id)
        check_range(since, until)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= MAX_BATCH_SIZE
        ):
            raise ValidationError(f"batch_size: must be an integer from 1 to {MAX_BATCH_SIZE}")
        return self._stream(org_id, since, until, batch_size)

    async def _stream(
        self, org_id: str, since: datetime | None, until: datetime | None, batch_size: int
    ) -> AsyncIterator[ResponseRecord]:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            cursor = conn.cursor(
                f"SELECT {_COLUMNS} FROM response_metrics WHERE {_RANGE} ORDER BY recorded_at, id",
                org_id,
                since,
                until,
                prefetch=batch_size,
            )
            async for row in cursor:
                yield _record(row)

    async def fetch_dispatch_outcomes(
        self, org_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, bool]]:
        """Whether each recorded response in ``[start, end]`` met its SLA, in time order.

        The simulator replays this history through a sandboxed ``PolicyEngine``: ``True`` is a
        success (the reported verdict, else arrived within ``SLA_BY_SEVERITY[priority]``
        minutes), ``False`` a failure.
        Both bounds are inclusive, as the simulator's ``OutcomeSource`` protocol states (unlike
        the half-open ranges of ``calculate_statistics`` and ``stream_metrics``).

        Raises:
            ValidationError: empty org, missing or naive bounds, or ``end`` before ``start``.
        """
        _check_org(org_id)
        problems = [
            f"{n}: must be a datetime" for n, v in (("start", start), ("end", end)) if v is None
        ]
        if problems:
            raise ValidationError(problems)
        try:
            check_range(start, end)
        except ValidationError as exc:
            raise ValidationError(
                [p.replace("since", "start").replace("until", "end") for p in exc.problems]
            ) from None
        rows = await self._pool.fetch(
            "SELECT priority, response_time_minutes, sla_met, recorded_at FROM response_metrics "
            "WHERE org_id = $1 AND recorded_at >= $2 AND recorded_at <= $3 "
            "ORDER BY recorded_at, id",
            org_id,
            start,
            end,
        )
        return [(row["recorded_at"], _met(row)) for row in rows]

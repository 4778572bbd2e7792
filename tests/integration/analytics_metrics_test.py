"""MetricsCollector on real PostgreSQL: recording, statistics, streaming and SLA outcomes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ionveil import statistics
from ionveil.errors import ValidationError
from services.analytics import MetricsCollector, ResponseRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rec(
    incident: str,
    minutes: float,
    *,
    priority: int = 3,
    offset_min: float = 0,
    org: str = "org1",
    region: str = "north",
) -> ResponseRecord:
    return ResponseRecord(
        org, incident, priority, minutes, region, T0 + timedelta(minutes=offset_min)
    )


@pytest.fixture
async def collector(analytics_pool: asyncpg.Pool) -> MetricsCollector:
    """A migrated collector on the test's analytics schema."""
    c = MetricsCollector(analytics_pool)
    await c.migrate()
    return c


@pytest.fixture
async def single_pool(dsns: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A pool of exactly one connection, so the stream's connection is the one we inspect."""
    pool = await asyncpg.create_pool(dsns["analytics"], min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


async def test_record_response_is_idempotent_per_incident(collector: MetricsCollector) -> None:
    """A second record for the same org and incident is ignored; another org's is kept."""
    assert await collector.record_response("org1", "i1", 5, 6.5, "north", T0) is True
    assert await collector.record_response("org1", "i1", 5, 99.0, "north", T0) is False
    assert await collector.record_response("org2", "i1", 5, 7.0, "south", T0) is True
    stats = await collector.calculate_statistics("org1")
    assert stats["count"] == 1 and stats["max"] == 6.5


async def test_record_response_defaults_to_now(collector: MetricsCollector) -> None:
    """Without recorded_at the record is stamped with the current time."""
    before = datetime.now(UTC)
    await collector.record_response("org1", "i1", 2, 10)
    (row,) = [r async for r in collector.stream_metrics("org1")]
    assert before - timedelta(seconds=1) <= row.recorded_at <= datetime.now(UTC)
    assert row.region == ""


async def test_record_many_counts_new_rows(collector: MetricsCollector) -> None:
    """record_many inserts a batch in one statement and returns how many were new."""
    batch = [rec(f"i{i}", float(i)) for i in range(50)]
    assert await collector.record_many(batch) == 50
    assert await collector.record_many([*batch[:10], rec("new", 1.0), rec("new", 2.0)]) == 1
    assert await collector.record_many([]) == 0
    assert (await collector.calculate_statistics("org1"))["count"] == 51


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (ResponseRecord("", "i", 3, 1.0, "r", T0), "org_id"),
        (ResponseRecord("o", "x" * 200, 3, 1.0, "r", T0), "incident_id"),
        (ResponseRecord("o", "i", 0, 1.0, "r", T0), "priority"),
        (ResponseRecord("o", "i", 6, 1.0, "r", T0), "priority"),
        (ResponseRecord("o", "i", 3, -1.0, "r", T0), "response_time_minutes"),
        (ResponseRecord("o", "i", 3, float("nan"), "r", T0), "response_time_minutes"),
        (ResponseRecord("o", "i", 3, True, "r", T0), "response_time_minutes"),
        (ResponseRecord("o", "i", 3, 1.0, None, T0), "region"),  # type: ignore[arg-type]
        (ResponseRecord("o", "i", 3, 1.0, "r" * 200, T0), "region"),
        (ResponseRecord("o", "i", 3, 1.0, "r", datetime(2024, 1, 1)), "recorded_at"),
        (ResponseRecord("o", "i", 3, 1.0, "r", "2024-01-01"), "recorded_at"),  # type: ignore[arg-type]
    ],
)
async def test_bad_records_are_refused_naming_the_field(
    collector: MetricsCollector, record: ResponseRecord, field: str
) -> None:
    """A bad record raises ValidationError naming the field, and the batch writes nothing."""
    with pytest.raises(ValidationError, match=rf"records\[1\]\.{field}:"):
        await collector.record_many([rec("good", 1.0), record])
    assert (await collector.calculate_statistics("org1"))["count"] == 0


async def test_record_many_refuses_non_records(collector: MetricsCollector) -> None:
    """Something that is not a ResponseRecord is named by its index."""
    with pytest.raises(ValidationError, match=r"records\[0\]: must be a ResponseRecord"):
        await collector.record_many([("org", "i", 3, 1.0, "r", T0)])  # type: ignore[list-item]


async def test_statistics_match_hand_computed_values(collector: MetricsCollector) -> None:
    """count/mean/min/max/percentiles/compliance equal hand-computed answers, per priority too."""
    # priority 5 (target 8): 4, 6, 10, 12 -> 2 of 4 met; priority 3 (target 30): 20, 30 -> met.
    await collector.record_many(
        [
            rec("a", 4, priority=5),
            rec("b", 6, priority=5),
            rec("c", 10, priority=5),
            rec("d", 12, priority=5),
            rec("e", 20, priority=3),
            rec("f", 30, priority=3),
            rec("z", 1000, priority=1, org="other"),
        ]
    )
    stats = await collector.calculate_statistics("org1")
    assert stats["org_id"] == "org1"
    assert stats["count"] == 6
    assert stats["mean"] == pytest.approx(82 / 6)
    assert (stats["min"], stats["max"]) == (4, 30)
    # sorted 4, 6, 10, 12, 20, 30: p50 rank 2.5 -> 11; p90 rank 4.5 -> 25
    assert stats["p50"] == pytest.approx(11)
    assert stats["p90"] == pytest.approx(25)
    assert stats["p95"] == pytest.approx(27.5)
    assert stats["p99"] == pytest.approx(29.5)
    assert stats["sla_compliance_rate"] == pytest.approx(4 / 6)
    assert list(stats["by_priority"]) == [5, 3]
    p5 = stats["by_priority"][5]
    assert p5["count"] == 4 and p5["mean"] == pytest.approx(8)
    assert p5["p50"] == pytest.approx(8) and p5["sla_compliance_rate"] == 0.5
    assert stats["by_priority"][3]["sla_compliance_rate"] == 1.0
    values = [4, 6, 10, 12, 20, 30]
    assert stats["p95"] == pytest.approx(statistics.percentile(values, 95))


async def test_statistics_time_range(collector: MetricsCollector) -> None:
    """since is inclusive and until exclusive."""
    await collector.record_many([rec(f"i{m}", float(m), offset_min=m) for m in range(10)])
    stats = await collector.calculate_statistics(
        "org1", since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6)
    )
    assert stats["count"] == 3 and (stats["min"], stats["max"]) == (3, 5)
    assert stats["since"] == T0 + timedelta(minutes=3)


async def test_statistics_of_nothing(collector: MetricsCollector) -> None:
    """With no records: count 0, figures None, compliance 1.0, no priorities."""
    stats = await collector.calculate_statistics("nobody")
    assert stats["count"] == 0
    assert all(stats[k] is None for k in ("mean", "min", "max", "p50", "p90", "p95", "p99"))
    assert stats["sla_compliance_rate"] == 1.0 and stats["by_priority"] == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"org_id": ""}, "org_id"),
        ({"org_id": "o", "since": datetime(2024, 1, 1)}, "since"),
        ({"org_id": "o", "until": "later"}, "until"),
        ({"org_id": "o", "since": T0, "until": T0 - timedelta(seconds=1)}, "until"),
    ],
)
async def test_query_arguments_are_validated(
    collector: MetricsCollector, kwargs: dict[str, object], field: str
) -> None:
    """Bad statistics/stream arguments raise ValidationError naming the argument, at the call."""
    with pytest.raises(ValidationError, match=f"{field}:"):
        await collector.calculate_statistics(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=f"{field}:"):
        collector.stream_metrics(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_size", [0, 10_001, True, 2.5])
def test_stream_batch_size_is_validated(analytics_pool: asyncpg.Pool, batch_size: object) -> None:
    """batch_size must be an integer from 1 to MAX_BATCH_SIZE."""
    with pytest.raises(ValidationError, match="batch_size:"):
        MetricsCollector(analytics_pool).stream_metrics("o", batch_size=batch_size)  # type: ignore[arg-type]


async def test_stream_yields_every_row_in_time_order(collector: MetricsCollector) -> None:
    """Streaming in small batches returns every record of the org, oldest first, in range."""
    await collector.record_many(
        [rec(f"i{m}", float(m), offset_min=(m * 7) % 23) for m in range(23)]
        + [rec("x", 1.0, org="other")]
    )
    rows = [r async for r in collector.stream_metrics("org1", batch_size=4)]
    assert len(rows) == 23
    assert [r.recorded_at for r in rows] == sorted(r.recorded_at for r in rows)
    assert all(isinstance(r, ResponseRecord) and r.org_id == "org1" for r in rows)
    windowed = [
        r
        async for r in collector.stream_metrics(
            "org1", since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=10)
        )
    ]
    assert [r.recorded_at for r in windowed] == [T0 + timedelta(minutes=m) for m in range(5, 10)]


async def _backend_state(dsn: str, pid: int) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()


async def _assert_connection_clean(pool: asyncpg.Pool, dsn: str, pid: int) -> None:
    """The one pooled connection is back, idle, with no transaction and no cursor open."""
    assert await _backend_state(dsn, pid) == "idle"
    async with asyncio.timeout(2), pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid
        assert not conn.is_in_transaction()
        assert await conn.fetch("SELECT name, statement FROM pg_cursors WHERE name <> ''") == []
        assert await conn.fetchval("SELECT 42") == 42


async def _seed(pool: asyncpg.Pool, n: int = 10) -> MetricsCollector:
    collector = MetricsCollector(pool)
    await collector.migrate()
    await collector.record_many([rec(f"i{m}", float(m), offset_min=m) for m in range(n)])
    return collector


async def test_stream_closed_early_leaves_no_transaction(
    single_pool: asyncpg.Pool, dsns: dict[str, str]
) -> None:
    """Breaking out after 3 rows (with aclosing) ends the transaction and frees the connection."""
    collector = await _seed(single_pool)
    pid = await single_pool.fetchval("SELECT pg_backend_pid()")
    seen = []
    async with contextlib.aclosing(collector.stream_metrics("org1", batch_size=2)) as rows:
        async for row in rows:
            seen.append(row.incident_id)
            if len(seen) == 3:
                # While suspended mid-stream the transaction is open: the check below can fail.
                assert await _backend_state(dsns["analytics"], pid) == "idle in transaction"
                break
    assert seen == ["i0", "i1", "i2"]
    await _assert_connection_clean(single_pool, dsns["analytics"], pid)


async def test_abandoned_stream_is_closed_by_the_loop(
    single_pool: asyncpg.Pool, dsns: dict[str, str]
) -> None:
    """A plain `break` without aclosing still closes the cursor once the iterator is dropped."""
    collector = await _seed(single_pool)
    pid = await single_pool.fetchval("SELECT pg_backend_pid()")
    count = 0
    async for _ in collector.stream_metrics("org1", batch_size=2):
        count += 1
        if count == 3:
            break
    async with asyncio.timeout(5):
        while await _backend_state(dsns["analytics"], pid) != "idle":
            await asyncio.sleep(0.02)
    await _assert_connection_clean(single_pool, dsns["analytics"], pid)


async def test_stream_closed_when_consumer_raises(
    single_pool: asyncpg.Pool, dsns: dict[str, str]
) -> None:
    """An exception in the consumer's loop body still closes the stream."""
    collector = await _seed(single_pool)
    pid = await single_pool.fetchval("SELECT pg_backend_pid()")

    class Stop(Exception):
        pass

    with pytest.raises(Stop):
        async with contextlib.aclosing(collector.stream_metrics("org1", batch_size=3)) as rows:
            async for _ in rows:
                raise Stop
    await _assert_connection_clean(single_pool, dsns["analytics"], pid)


async def test_dispatch_outcomes_in_time_order(collector: MetricsCollector) -> None:
    """Outcomes are (recorded_at, met) in time order over [start, end]; on-target counts as met."""
    await collector.record_many(
        [
            rec("late", 9, priority=5, offset_min=2),  # target 8: missed
            rec("exact", 8, priority=5, offset_min=1),  # exactly on target: met
            rec("ok", 59, priority=2, offset_min=3),  # target 60: met
            rec("slow", 121, priority=1, offset_min=4),  # target 120: missed
            rec("at-end", 1, priority=5, offset_min=10),
            rec("outside", 1, priority=5, offset_min=10.5),
            rec("other-org", 1, priority=5, offset_min=2, org="org2"),
        ]
    )
    outcomes = await collector.fetch_dispatch_outcomes("org1", T0, T0 + timedelta(minutes=10))
    assert outcomes == [
        (T0 + timedelta(minutes=1), True),
        (T0 + timedelta(minutes=2), False),
        (T0 + timedelta(minutes=3), True),
        (T0 + timedelta(minutes=4), False),
        (T0 + timedelta(minutes=10), True),
    ]
    assert await collector.fetch_dispatch_outcomes("org1", T0, T0) == []
    at_end = T0 + timedelta(minutes=10)
    assert await collector.fetch_dispatch_outcomes("org1", at_end, at_end) == [(at_end, True)]


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (None, T0, "start"),
        (T0, None, "end"),
        (datetime(2024, 1, 1), T0, "start"),
        (T0, T0 - timedelta(minutes=1), "end: must not be before start"),
    ],
)
async def test_dispatch_outcomes_validate_bounds(
    collector: MetricsCollector, start: datetime, end: datetime, field: str
) -> None:
    """Missing, naive or reversed bounds raise ValidationError naming start or end."""
    with pytest.raises(ValidationError, match=field):
        await collector.fetch_dispatch_outcomes("org1", start, end)


async def test_migrate_is_idempotent_and_concurrent(analytics_pool: asyncpg.Pool) -> None:
    """Several collectors migrating at once (replicas starting together) all succeed."""
    collectors = [MetricsCollector(analytics_pool) for _ in range(4)]
    await asyncio.gather(*(c.migrate() for c in collectors))
    await collectors[0].record_response("org1", "i1", 3, 1.0, "r", T0)
    await collectors[1].migrate()
    assert (await collectors[2].calculate_statistics("org1"))["count"] == 1


def test_sla_met_property() -> None:
    """A record meets its SLA when the response is within SLA_BY_SEVERITY[priority]."""
    assert rec("a", 8, priority=5).sla_met
    assert not rec("a", 8.01, priority=5).sla_met

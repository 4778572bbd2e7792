"""AuditLogger on real PostgreSQL (and the in-memory store): chaining, queries, tampering."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import itertools
import json
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest

from ionveil.errors import ValidationError
from services.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditLogger,
    AuditStore,
    InMemoryAuditStore,
    PostgresAuditStore,
)
from services.audit import postgres as audit_postgres
from services.audit._chain import record_hash

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float
    y: float


@pytest.fixture(params=["postgres", "memory"])
def audit_store(request: pytest.FixtureRequest) -> AuditStore:
    """Each store kind: PostgreSQL on the test's audit schema, and in-process memory."""
    if request.param == "postgres":
        return PostgresAuditStore(request.getfixturevalue("audit_pool"))
    return InMemoryAuditStore()


@pytest.fixture
async def audit(audit_store: AuditStore) -> AuditLogger:
    """An AuditLogger on each store kind, migrated, with a fixed clock."""
    logger = AuditLogger(audit_store, clock=lambda: T0)
    await logger.migrate()
    return logger


@pytest.fixture
async def pg_audit(audit_pool: asyncpg.Pool) -> AuditLogger:
    """An AuditLogger on PostgreSQL only."""
    logger = AuditLogger(PostgresAuditStore(audit_pool))
    await logger.migrate()
    return logger


def _expected_hash(record_fields: dict[str, object]) -> str:
    body = json.dumps(record_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


async def test_records_chain_from_genesis(audit: AuditLogger) -> None:
    """Each record gets the next seq, its predecessor's hash, and a SHA-256 over its fields."""
    first = await audit.log("alice", "alert.created", "alert", "a1", after={"s": "open"})
    second = await audit.log(
        "bob", "alert.acknowledged", "alert", "a1", before={"s": "open"}, after={"s": "ack"}
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.timestamp == T0
    assert first.hash == _expected_hash(
        {
            "seq": 1,
            "actor": "alice",
            "action": "alert.created",
            "entity_type": "alert",
            "entity_id": "a1",
            "org_id": None,
            "before": None,
            "after": '{"s":"open"}',
            "timestamp": "2024-05-01T12:00:00.000000+00:00",
            "prev_hash": GENESIS_HASH,
        }
    )
    report = await audit.verify_chain()
    assert report.ok and report.checked == 2 and report.first_bad_seq is None
    assert report.head_hash == second.hash


async def test_log_many_appends_in_order(audit: AuditLogger) -> None:
    """A batch is chained in the given order, after what is already there."""
    await audit.log("sys", "boot", "service", "alerts")
    entries = [
        AuditEntry("sys", "alert.created", "alert", f"a{i}", after={"i": i}, org_id="org1")
        for i in range(5)
    ]
    records = await audit.log_many(entries)
    assert [r.seq for r in records] == [2, 3, 4, 5, 6]
    assert [r.entity_id for r in records] == [f"a{i}" for i in range(5)]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert await audit.log_many([]) == []
    assert (await audit.verify_chain()).checked == 6


async def test_stored_records_read_back_identically(audit: AuditLogger) -> None:
    """What log() returns equals what for_entity() later reads, JSON values normalised."""
    written = await audit.log(
        "carol",
        "rule.updated",
        "rule",
        "r1",
        before={
            "when": datetime(2024, 1, 1, tzinfo=UTC),
            "day": date(2024, 1, 2),
            "tags": ("a", "b"),
            "set": {"y", "x"},
            "c": Colour.RED,
            "point": Point(1.5, 2),
        },
        after={"big": 1e20, "f": 0.1, "n": None, "uni": "żółw"},
        org_id="org9",
        at=datetime(2024, 5, 1, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
    )
    assert written.before == {
        "when": "2024-01-01T00:00:00.000000+00:00",
        "day": "2024-01-02",
        "tags": ["a", "b"],
        "set": ["x", "y"],
        "c": "red",
        "point": {"x": 1.5, "y": 2},
    }
    assert written.timestamp == datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC)
    (read,) = await audit.for_entity("rule", "r1")
    assert read == written
    assert (await audit.verify_chain()).ok


async def test_for_entity_and_query_filters(audit: AuditLogger) -> None:
    """for_entity picks one entity; query filters by org, actor, action, since and limit."""
    for i in range(6):
        await audit.log(
            "alice" if i % 2 else "bob",
            "alert.created" if i < 3 else "alert.resolved",
            "alert",
            f"a{i % 3}",
            org_id="org1" if i < 4 else "org2",
            at=T0 + timedelta(minutes=i),
        )
    assert [r.seq for r in await audit.for_entity("alert", "a1")] == [2, 5]
    assert await audit.for_entity("alert", "nope") == []
    assert [r.seq for r in await audit.query(org_id="org2")] == [5, 6]
    assert [r.seq for r in await audit.query(actor="alice")] == [2, 4, 6]
    assert [r.seq for r in await audit.query(action="alert.resolved", org_id="org1")] == [4]
    assert [r.seq for r in await audit.query(since=T0 + timedelta(minutes=3))] == [4, 5, 6]
    assert [r.seq for r in await audit.query(limit=2)] == [1, 2]
    assert len(await audit.query()) == 6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"actor": ""}, "actor"),
        ({"action": "  "}, "action"),
        ({"entity_type": 5}, "entity_type"),
        ({"entity_id": "x" * 300}, "entity_id"),
        ({"org_id": ""}, "org_id"),
        ({"before": ["not", "a", "dict"]}, "before"),
        ({"after": {"x": float("nan")}}, "after"),
        ({"after": {"x": object()}}, "after"),
        ({"at": datetime(2024, 5, 1)}, "at"),
        ({"at": "yesterday"}, "at"),
    ],
)
async def test_bad_input_names_the_field(
    audit: AuditLogger, kwargs: dict[str, object], field: str
) -> None:
    """Invalid arguments raise ValidationError naming the field, and nothing is written."""
    args: dict[str, object] = {
        "actor": "a",
        "action": "b",
        "entity_type": "c",
        "entity_id": "d",
    }
    args.update(kwargs)
    positional = [args.pop(k) for k in ("actor", "action", "entity_type", "entity_id")]
    with pytest.raises(ValidationError, match=rf"\b{field}:"):
        await audit.log(*positional, **args)  # type: ignore[arg-type]
    assert (await audit.verify_chain()).checked == 0


async def test_log_many_with_one_bad_entry_writes_nothing(audit: AuditLogger) -> None:
    """Problems are reported per entry index and the whole batch is refused."""
    entries = [
        AuditEntry("a", "b", "c", "d"),
        AuditEntry("a", "", "c", "d"),
        "junk",  # type: ignore[list-item]
    ]
    with pytest.raises(ValidationError) as info:
        await audit.log_many(entries)
    assert info.value.problems == [
        "entries[1].action: must be a non-empty string",
        "entries[2]: must be an AuditEntry",
    ]
    assert (await audit.verify_chain()).checked == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"since": datetime(2024, 1, 1)}, "since"),
    ],
)
async def test_bad_query_arguments(
    audit: AuditLogger, kwargs: dict[str, object], field: str
) -> None:
    """query() refuses a bad limit or a naive since with a ValidationError naming it."""
    with pytest.raises(ValidationError, match=f"{field}:"):
        await audit.query(**kwargs)  # type: ignore[arg-type]


async def test_empty_chain_verifies(audit: AuditLogger) -> None:
    """An empty trail is a valid chain of zero records."""
    report = await audit.verify_chain()
    assert report.ok and report.checked == 0 and report.head_hash is None


async def test_in_memory_tampering_is_detected() -> None:
    """Editing a kept record breaks the chain at that record."""
    store = InMemoryAuditStore()
    audit = AuditLogger(store)
    for i in range(4):
        await audit.log("a", "x", "e", str(i), after={"v": i})
    store._records[2] = dataclasses.replace(store._records[2], after={"v": 99})
    report = await audit.verify_chain()
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "content" in (report.reason or "")


async def test_append_only_trigger_refuses_changes(
    pg_audit: AuditLogger, audit_pool: asyncpg.Pool
) -> None:
    """UPDATE, DELETE and TRUNCATE on audit_log are refused by the trigger."""
    await pg_audit.log("a", "x", "e", "1")
    for sql in (
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await audit_pool.execute(sql)
    assert (await pg_audit.verify_chain()).ok


async def _tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


@pytest.mark.parametrize(
    ("sql", "first_bad", "reason"),
    [
        ("UPDATE audit_log SET after = '{\"v\":99}' WHERE seq = 3", 3, "content"),
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1", 1, "content"),
        ("UPDATE audit_log SET ts = ts + interval '1 second' WHERE seq = 4", 4, "content"),
        ("DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
        ("UPDATE audit_log SET prev_hash = repeat('f', 64) WHERE seq = 5", 5, "prev_hash"),
    ],
)
async def test_postgres_tampering_is_detected(
    pg_audit: AuditLogger, audit_pool: asyncpg.Pool, sql: str, first_bad: int, reason: str
) -> None:
    """With the trigger disabled, an edited, deleted or relinked row breaks verify_chain."""
    for i in range(6):
        await pg_audit.log("a", "x", "e", str(i), after={"v": i}, org_id="o")
    assert (await pg_audit.verify_chain()).ok
    await _tamper(audit_pool, sql)
    report = await pg_audit.verify_chain()
    assert not report.ok
    assert report.first_bad_seq == first_bad
    assert reason in (report.reason or "")


async def test_rehashed_row_still_breaks_the_next_link(
    pg_audit: AuditLogger, audit_pool: asyncpg.Pool
) -> None:
    """A forger who edits a row and recomputes its hash is caught at the following record."""
    for i in range(4):
        await pg_audit.log("a", "x", "e", str(i))
    row = await audit_pool.fetchrow("SELECT * FROM audit_log WHERE seq = 2")
    forged = record_hash(
        seq=2,
        actor="mallory",
        action=row["action"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        org_id=row["org_id"],
        before=row["before"],
        after=row["after"],
        timestamp=row["ts"],
        prev_hash=row["prev_hash"],
    )
    await _tamper(
        audit_pool, "UPDATE audit_log SET actor = 'mallory', hash = $1 WHERE seq = 2", forged
    )
    report = await pg_audit.verify_chain()
    assert report.first_bad_seq == 3
    assert "prev_hash" in (report.reason or "")


async def test_store_refuses_an_entry_without_time(audit_store: AuditStore) -> None:
    """A store called directly (bypassing the logger) still refuses an entry with no time."""
    await audit_store.migrate()
    with pytest.raises(ValidationError, match="at:"):
        await audit_store.append([AuditEntry("a", "b", "c", "d")])
    assert await audit_store.append([]) == []


async def test_verify_pages_through_long_chains(
    pg_audit: AuditLogger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_chain reads the table a page at a time and still checks every record."""
    monkeypatch.setattr(audit_postgres, "_VERIFY_PAGE", 3)
    await pg_audit.log_many([AuditEntry("a", "x", "e", str(i)) for i in range(10)])
    report = await pg_audit.verify_chain()
    assert report.ok and report.checked == 10


@pytest.mark.parametrize("commit", [True, False])
async def test_audit_joins_the_callers_transaction(
    pg_audit: AuditLogger, audit_pool: asyncpg.Pool, commit: bool
) -> None:
    """With conn, the state change and its audit record commit or roll back together."""
    await audit_pool.execute("CREATE TABLE thing (id text PRIMARY KEY, state text)")

    class Rollback(Exception):
        pass

    async with audit_pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO thing VALUES ('t1', 'open')")
                await pg_audit.log("a", "thing.created", "thing", "t1", conn=conn)
                await pg_audit.log_many(
                    [AuditEntry("a", "thing.touched", "thing", "t1")], conn=conn
                )
                if not commit:
                    raise Rollback
        except Rollback:
            pass
    things = await audit_pool.fetchval("SELECT count(*) FROM thing")
    trail = await pg_audit.for_entity("thing", "t1")
    assert things == (1 if commit else 0)
    assert len(trail) == (2 if commit else 0)


async def test_conn_outside_a_transaction_gets_one(
    pg_audit: AuditLogger, audit_pool: asyncpg.Pool
) -> None:
    """A connection not in a transaction is still safe: the store opens one around the append."""
    async with audit_pool.acquire() as conn:
        record = await pg_audit.log("a", "x", "e", "1", conn=conn)
        assert not conn.is_in_transaction()
    assert record.seq == 1
    assert (await pg_audit.verify_chain()).ok


async def test_concurrent_writers_chain_correctly(
    audit_pool: asyncpg.Pool, dsns: dict[str, str]
) -> None:
    """Writers on two pools (as two replicas) interleave without forking or gapping the chain."""
    other_pool = await asyncpg.create_pool(dsns["audit"], min_size=1, max_size=5)
    try:
        loggers = [AuditLogger(PostgresAuditStore(p)) for p in (audit_pool, other_pool)]
        await asyncio.gather(*(lg.migrate() for lg in loggers))

        async def writer(n: int) -> None:
            logger = loggers[n % 2]
            if n % 3:
                await logger.log("w", "write", "e", str(n))
            else:
                await logger.log_many([AuditEntry("w", "batch", "e", f"{n}-{i}") for i in range(4)])

        await asyncio.gather(*(writer(n) for n in range(30)))
        report = await loggers[0].verify_chain()
        expected = sum(4 if n % 3 == 0 else 1 for n in range(30))
        assert report.ok and report.checked == expected
        seqs = await audit_pool.fetch("SELECT seq FROM audit_log ORDER BY seq")
        assert [r["seq"] for r in seqs] == list(range(1, expected + 1))
    finally:
        await other_pool.close()


async def test_migrate_is_idempotent(pg_audit: AuditLogger) -> None:
    """Running migrate again keeps existing records and the chain intact."""
    await pg_audit.log("a", "x", "e", "1")
    await pg_audit.migrate()
    await pg_audit.migrate()
    assert (await pg_audit.verify_chain()).checked == 1


def test_stores_satisfy_the_protocol(audit_pool: asyncpg.Pool) -> None:
    """Both stores implement the AuditStore protocol the logger is written against."""
    assert isinstance(InMemoryAuditStore(), AuditStore)
    assert isinstance(PostgresAuditStore(audit_pool), AuditStore)
    assert isinstance(AuditLogger(InMemoryAuditStore()).store, InMemoryAuditStore)

"""The PostgreSQL audit store: one append-only, hash-chained table in the audit database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from services.audit._chain import ChainVerifier, chain, load_state
from services.audit.models import GENESIS_HASH, AuditEntry, AuditRecord, ChainReport

__all__ = ["PostgresAuditStore"]

log = structlog.get_logger(__name__)

# Advisory-lock key per schema: writers of one chain queue up, other schemas are unaffected.
_LOCK_KEY = "hashtext('ionveil.audit_log:' || current_schema())"

_SCHEMA = f"""
SELECT pg_advisory_xact_lock({_LOCK_KEY});
CREATE TABLE IF NOT EXISTS audit_log (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    actor       text NOT NULL,
    action      text NOT NULL,
    entity_type text NOT NULL,
    entity_id   text NOT NULL,
    org_id      text,
    before      text,
    after       text,
    ts          timestamptz NOT NULL,
    prev_hash   char(64) NOT NULL,
    hash        char(64) NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS audit_log_entity_idx ON audit_log (entity_type, entity_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_org_idx ON audit_log (org_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_ts_idx ON audit_log (ts);
CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- The lock and then the head, in one round trip: each statement of a VOLATILE function takes
-- a fresh snapshot, so the head is read after the lock is held (a single SELECT would not).
CREATE OR REPLACE FUNCTION audit_log_locked_head(OUT head_seq bigint, OUT head_hash text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ionveil.audit_log:' || current_schema()));
    SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
END;
$$;
CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
"""

_COLUMNS = "seq, actor, action, entity_type, entity_id, org_id, before, after, ts, prev_hash, hash"

_INSERT = f"""
INSERT INTO audit_log ({_COLUMNS})
SELECT * FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[]
)
"""

_VERIFY_PAGE = 5000


def _record(row: asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        seq=row["seq"],
        actor=row["actor"],
        action=row["action"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        org_id=row["org_id"],
        before=load_state(row["before"]),
        after=load_state(row["after"]),
        timestamp=row["ts"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


class PostgresAuditStore:
    """An ``AuditStore`` on an asyncpg pool of the audit database.

    Appends take a transaction-scoped advisory lock and read the chain head (one function call,
    ``audit_log_locked_head``), and insert the new records in one statement, so concurrent
    writers (tasks, replicas) chain one after another. A trigger refuses UPDATE, DELETE and
    TRUNCATE on the table.

    The caller's transaction (``conn``) must run at READ COMMITTED (PostgreSQL's default): at a
    stricter isolation level the head read after the lock may be stale, and the insert then fails
    on the ``seq`` primary key rather than forking the chain.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def migrate(self) -> None:
        """Create the table, indexes and append-only triggers (idempotent, safe concurrently)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_SCHEMA)

    async def append(
        self, entries: Sequence[AuditEntry], *, conn: asyncpg.Connection | None = None
    ) -> list[AuditRecord]:
        """Chain and insert ``entries``; inside ``conn``'s transaction when given."""
        if not entries:
            return []
        if conn is not None:
            if conn.is_in_transaction():
                return await self._append(conn, entries)
            async with conn.transaction():
                return await self._append(conn, entries)
        async with self._pool.acquire() as own, own.transaction():
            return await self._append(own, entries)

    async def _append(
        self, conn: asyncpg.Connection, entries: Sequence[AuditEntry]
    ) -> list[AuditRecord]:
        head_seq, head_hash = await conn.fetchrow("SELECT * FROM audit_log_locked_head()")
        if head_seq is None:
            head_seq, head_hash = 0, GENESIS_HASH
        rows = list(chain(head_seq, head_hash, entries))
        columns: list[list[Any]] = [[] for _ in range(11)]
        for record, before, after in rows:
            values = (
                record.seq,
                record.actor,
                record.action,
                record.entity_type,
                record.entity_id,
                record.org_id,
                before,
                after,
                record.timestamp,
                record.prev_hash,
                record.hash,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await conn.execute(_INSERT, *columns)
        return [record for record, _, _ in rows]

    async def for_entity(self, entity_type: str, entity_id: str) -> list[AuditRecord]:
        """Every record of one entity, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit_log WHERE entity_type = $1 AND entity_id = $2 "
            "ORDER BY seq",
            entity_type,
            entity_id,
        )
        return [_record(r) for r in rows]

    async def query(
        self,
        *,
        org_id: str | None,
        actor: str | None,
        action: str | None,
        since: datetime | None,
        limit: int,
    ) -> list[AuditRecord]:
        """Records matching every given filter, oldest first, at most ``limit``."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit_log "
            "WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR actor = $2) "
            "AND ($3::text IS NULL OR action = $3) AND ($4::timestamptz IS NULL OR ts >= $4) "
            "ORDER BY seq LIMIT $5",
            org_id,
            actor,
            action,
            since,
            limit,
        )
        return [_record(r) for r in rows]

    async def verify_chain(self) -> ChainReport:
        """Walk the table in seq order, a page at a time, stopping at the first broken link."""
        verifier = ChainVerifier(GENESIS_HASH)
        last_seq = 0
        while True:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                last_seq,
                _VERIFY_PAGE,
            )
            if not rows or not verifier.feed(_record(r) for r in rows):
                break
            last_seq = rows[-1]["seq"]
        report = verifier.report()
        if not report.ok:
            log.warning(
                "audit_chain_broken", first_bad_seq=report.first_bad_seq, reason=report.reason
            )
        return report

"""The live policy state in PostgreSQL (the core database).

One transaction per batch: the orgs' state rows are locked (in org order, so replicas cannot
deadlock on them), the batch's event ids are claimed in ``policy_applied_events`` (an id
already there is a duplicate and skipped), the engines advance, and the new snapshots, the
highest stream sequence and the transitions (``policy_outbox``) are written. A crash anywhere
before the commit leaves nothing behind; JetStream redelivers and the batch is applied once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.policy.models import ApplyResult, LiveOutcome, OrgPolicyState, OutboxEntry
from services.policy.store import Advance, Reconfigure, dedupe

__all__ = ["SCHEMA", "PostgresPolicyStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_state (
    org_id      text PRIMARY KEY,
    version     bigint NOT NULL DEFAULT 0,
    last_seq    bigint NOT NULL DEFAULT 0,
    state       jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS policy_applied_events (
    org_id      text NOT NULL,
    event_id    text NOT NULL,
    stream_seq  bigint NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, event_id)
);
CREATE INDEX IF NOT EXISTS policy_applied_events_applied_at
    ON policy_applied_events (applied_at);
CREATE TABLE IF NOT EXISTS policy_outbox (
    org_id      text NOT NULL,
    sequence    bigint NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, sequence)
);
"""

# Any constant works; it only keeps concurrent migrations of several replicas apart.
_MIGRATION_LOCK = 0x10_4E_E1_01


def _row_state(row: asyncpg.Record) -> OrgPolicyState:
    raw = row["state"]
    return OrgPolicyState(
        org=row["org_id"],
        version=int(row["version"]),
        last_seq=int(row["last_seq"]),
        snapshot=json.loads(raw) if raw is not None else None,
        updated_at=row["updated_at"],
    )


class PostgresPolicyStore:
    """``PolicyStore`` on an asyncpg pool (tables with unqualified names: the search_path).

    Args:
        pool: a pool on the core database.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def migrate(self) -> None:
        """Create the tables if missing (serialised across replicas by an advisory lock)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(SCHEMA)

    async def load(self, org: str) -> OrgPolicyState | None:
        """The org's state, ``None`` if it has none yet."""
        row = await self._pool.fetchrow(
            "SELECT org_id, version, last_seq, state, updated_at FROM policy_state "
            "WHERE org_id = $1",
            org,
        )
        return _row_state(row) if row is not None else None

    async def orgs(self) -> list[str]:
        """Every org with stored state, sorted."""
        rows = await self._pool.fetch("SELECT org_id FROM policy_state ORDER BY org_id")
        return [r["org_id"] for r in rows]

    @staticmethod
    async def _lock_states(conn: asyncpg.Connection, orgs: list[str]) -> dict[str, OrgPolicyState]:
        await conn.execute(
            "INSERT INTO policy_state (org_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            orgs,
        )
        rows = await conn.fetch(
            "SELECT org_id, version, last_seq, state, updated_at FROM policy_state "
            "WHERE org_id = ANY($1::text[]) ORDER BY org_id FOR UPDATE",
            orgs,
        )
        return {r["org_id"]: _row_state(r) for r in rows}

    async def apply(self, outcomes: Sequence[LiveOutcome], advance: Advance) -> ApplyResult:
        """Apply never-seen outcomes per org through ``advance`` in one transaction."""
        unique, repeats = dedupe(outcomes)
        if not unique:
            return ApplyResult(0, repeats, ())
        orgs = sorted({o.org for o in unique})
        async with self._pool.acquire() as conn, conn.transaction():
            states = await self._lock_states(conn, orgs)
            claimed = await conn.fetch(
                "INSERT INTO policy_applied_events (org_id, event_id, stream_seq) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) "
                "ON CONFLICT DO NOTHING RETURNING org_id, event_id",
                [o.org for o in unique],
                [o.event_id for o in unique],
                [o.stream_seq for o in unique],
            )
            new_keys = {(r["org_id"], r["event_id"]) for r in claimed}
            by_org: dict[str, list[LiveOutcome]] = {}
            for outcome in unique:
                if (outcome.org, outcome.event_id) in new_keys:
                    by_org.setdefault(outcome.org, []).append(outcome)
            updates: list[tuple[str, int, str]] = []
            entries: list[OutboxEntry] = []
            for org, fresh in sorted(by_org.items()):
                snapshot, transitions = advance(states[org], fresh)
                updates.append((org, max(o.stream_seq for o in fresh), json.dumps(snapshot)))
                entries += [OutboxEntry(org, int(t["sequence"]), t) for t in transitions]
            await conn.executemany(
                "UPDATE policy_state SET version = version + 1, "
                "last_seq = GREATEST(last_seq, $2), state = $3::jsonb, updated_at = now() "
                "WHERE org_id = $1",
                updates,
            )
            await conn.executemany(
                "INSERT INTO policy_outbox (org_id, sequence, payload) VALUES ($1, $2, $3::jsonb) "
                "ON CONFLICT DO NOTHING",
                [(e.org, e.sequence, json.dumps(e.payload)) for e in entries],
            )
        applied = sum(len(v) for v in by_org.values())
        return ApplyResult(applied, repeats + len(unique) - applied, tuple(entries))

    async def reconfigure(self, org: str, change: Reconfigure) -> OrgPolicyState:
        """Replace the org's snapshot with ``change(state)`` under the row lock."""
        async with self._pool.acquire() as conn, conn.transaction():
            state = (await self._lock_states(conn, [org]))[org]
            snapshot: dict[str, Any] = change(state)
            row = await conn.fetchrow(
                "UPDATE policy_state SET version = version + 1, state = $2::jsonb, "
                "updated_at = now() WHERE org_id = $1 "
                "RETURNING org_id, version, last_seq, state, updated_at",
                org,
                json.dumps(snapshot),
            )
        return _row_state(row)

    async def pending(self, limit: int = 1000) -> list[OutboxEntry]:
        """Committed transitions not yet marked published, in (org, sequence) order."""
        rows = await self._pool.fetch(
            "SELECT org_id, sequence, payload FROM policy_outbox "
            "ORDER BY org_id, sequence LIMIT $1",
            limit,
        )
        return [
            OutboxEntry(r["org_id"], int(r["sequence"]), json.loads(r["payload"])) for r in rows
        ]

    async def mark_published(self, entries: Iterable[OutboxEntry]) -> None:
        """Drop published entries from the outbox."""
        keys = [(e.org, e.sequence) for e in entries]
        if keys:
            await self._pool.executemany(
                "DELETE FROM policy_outbox WHERE org_id = $1 AND sequence = $2", keys
            )

    async def prune_applied(self, before: datetime) -> int:
        """Forget applied event ids older than ``before`` (keep it >= DISPATCH max age)."""
        status = await self._pool.execute(
            "DELETE FROM policy_applied_events WHERE applied_at < $1", before
        )
        return int(status.split()[-1])

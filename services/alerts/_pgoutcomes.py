"""SLA outcomes and applied policy transitions of ``PostgresAlertStore``: shared by replicas.

- ``alert_outcomes`` has one row per (org, incident, kind): ``breach`` when the incident is
  first seen past its target (by any replica: the primary key counts it once), ``arrival`` when
  a unit arrived (``met`` tells whether within target). Arrivals feed compliance rates.
- ``alert_streaks`` keeps, per org (region ``''``) and per (org, region), the number of breaches
  in a row, updated in the transaction that records the outcome: a breach adds one, an arrival
  within target resets it. So every replica reads the same streaks and rates, whichever replica
  saw the incident events.
- ``alert_policy_seq`` holds each org's last applied policy transition sequence; it advances in
  the transaction of the alert change the transition causes (``policy_fence``), so a redelivered
  transition is refused by the database, not by one replica's memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

from services.alerts._tracker import IncidentKey, TrackedIncident
from services.alerts.rules import OutcomeSnapshot
from services.alerts.store import BreachMark, PolicySeq, StaleTransitionError

if TYPE_CHECKING:
    from services.alerts.postgres import PostgresAlertStore

__all__ = ["PgOutcomesMixin", "policy_fence"]

_ADVANCE_POLICY = """
INSERT INTO alert_policy_seq (org_id, sequence) VALUES ($1, $2)
ON CONFLICT (org_id) DO UPDATE SET sequence = EXCLUDED.sequence
WHERE alert_policy_seq.sequence < EXCLUDED.sequence
RETURNING sequence
"""
_BREACHES = """
INSERT INTO alert_outcomes (org_id, incident_id, kind, region, at, met)
SELECT o, i, 'breach', r, a, false
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) AS m(o, i, r, a)
ORDER BY o, i
ON CONFLICT DO NOTHING
RETURNING org_id, incident_id, region
"""
# One statement (atomic on its own, one round trip): the new breaches, and a streak step for
# each, per org (region '') and per (org, region), as ``_streak_keys`` says.
_BREACHES_AND_BUMP = f"""
WITH new AS ({_BREACHES.strip()}),
keys AS (
    SELECT org_id AS o, '' AS r FROM new
    UNION ALL
    SELECT org_id, region FROM new WHERE region IS NOT NULL AND region <> ''
),
bumped AS (
    INSERT INTO alert_streaks (org_id, region, streak)
    SELECT o, r, count(*)::int FROM keys GROUP BY o, r ORDER BY o, r
    ON CONFLICT (org_id, region) DO UPDATE SET streak = alert_streaks.streak + EXCLUDED.streak
)
SELECT org_id, incident_id FROM new
"""
_BUMP = """
INSERT INTO alert_streaks (org_id, region, streak)
SELECT o, r, n FROM unnest($1::text[], $2::text[], $3::int[]) AS s(o, r, n) ORDER BY o, r
ON CONFLICT (org_id, region) DO UPDATE SET streak = alert_streaks.streak + EXCLUDED.streak
"""
_RESET = """
INSERT INTO alert_streaks (org_id, region, streak)
SELECT o, r, 0 FROM unnest($1::text[], $2::text[]) AS s(o, r) ORDER BY o, r
ON CONFLICT (org_id, region) DO UPDATE SET streak = 0
"""


async def policy_fence(conn: asyncpg.Connection, policy_seq: PolicySeq | None) -> None:
    """Advance the org's applied policy sequence inside ``conn``'s transaction.

    Raises:
        StaleTransitionError: the sequence is not newer (the caller's transaction rolls back).
    """
    if policy_seq is None:
        return
    if await conn.fetchval(_ADVANCE_POLICY, *policy_seq) is None:
        org_id, sequence = policy_seq
        raise StaleTransitionError(f"policy transition {sequence} of {org_id} already applied")


def _streak_keys(org_id: str, region: str | None) -> list[tuple[str, str]]:
    return [(org_id, "")] + ([(org_id, region)] if region else [])


async def _bump(conn: asyncpg.Connection, counts: Counter[tuple[str, str]]) -> None:
    keys = sorted(counts)
    await conn.execute(_BUMP, [k[0] for k in keys], [k[1] for k in keys], [counts[k] for k in keys])


class PgOutcomesMixin:
    """Outcomes, streaks and policy sequences (mixed into ``PostgresAlertStore``)."""

    async def policy_seq(self: PostgresAlertStore, org_id: str) -> int | None:
        """See ``AlertStore.policy_seq``."""
        value = await self._pool.fetchval(
            "SELECT sequence FROM alert_policy_seq WHERE org_id = $1", org_id
        )
        return None if value is None else int(value)

    async def claim_policy_seq(self: PostgresAlertStore, org_id: str, sequence: int) -> bool:
        """See ``AlertStore.claim_policy_seq``."""
        return await self._pool.fetchval(_ADVANCE_POLICY, org_id, sequence) is not None

    async def record_breaches(
        self: PostgresAlertStore, marks: list[BreachMark]
    ) -> list[IncidentKey]:
        """See ``AlertStore.record_breaches``."""
        if not marks:
            return []
        rows = await self._pool.fetch(
            _BREACHES_AND_BUMP,
            [key[0] for key, _, _ in marks],
            [key[1] for key, _, _ in marks],
            [region for _, region, _ in marks],
            [at for _, _, at in marks],
        )
        return [(r["org_id"], r["incident_id"]) for r in rows]

    async def finish_incident(
        self: PostgresAlertStore,
        key: IncidentKey,
        *,
        arrived_at: float | None,
        judge: Callable[[TrackedIncident], bool],
    ) -> TrackedIncident | None:
        """See ``AlertStore.finish_incident``."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM alert_incidents WHERE org_id = $1 AND incident_id = $2 "
                "RETURNING org_id, incident_id, priority, dispatch_ts, region",
                *key,
            )
            counted = await conn.fetchval(
                "DELETE FROM alert_outcomes WHERE org_id = $1 AND incident_id = $2 "
                "AND kind = 'breach' RETURNING true",
                *key,
            )
            if row is None:
                return None
            incident = TrackedIncident(**dict(row))
            if arrived_at is None:
                return incident
            met = judge(incident)
            fresh = await conn.fetchval(
                "INSERT INTO alert_outcomes (org_id, incident_id, kind, region, at, met) "
                "VALUES ($1, $2, 'arrival', $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
                *key,
                incident.region,
                arrived_at,
                met,
            )
            streak = _streak_keys(key[0], incident.region)
            if fresh and not counted and met:
                await conn.execute(_RESET, [k[0] for k in streak], [k[1] for k in streak])
            elif fresh and not counted:
                await _bump(conn, Counter(streak))
            return incident

    async def outcome_view(self: PostgresAlertStore, since: float) -> OutcomeSnapshot:
        """See ``AlertStore.outcome_view``."""
        view = OutcomeSnapshot()
        async with self._pool.acquire() as conn:
            for r in await conn.fetch("SELECT org_id, region, streak FROM alert_streaks"):
                view.streaks[(r["org_id"], r["region"] or None)] = int(r["streak"])
            for r in await conn.fetch(
                "SELECT org_id, at, met FROM alert_outcomes "
                "WHERE kind = 'arrival' AND at >= $1 ORDER BY at",
                since,
            ):
                view.arrivals.setdefault(r["org_id"], []).append((float(r["at"]), r["met"]))
        return view

    async def prune_outcomes(self: PostgresAlertStore, before: float) -> int:
        """See ``AlertStore.prune_outcomes`` (breach marks of incidents that never ended go
        too; such an incident's breach would be counted again, once)."""
        status = await self._pool.execute("DELETE FROM alert_outcomes WHERE at < $1", before)
        return int(status.split()[-1])

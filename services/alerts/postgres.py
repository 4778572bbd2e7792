"""``PostgresAlertStore``: rules, alerts, policies, suppressions and deliveries in the audit DB.

Races between replicas are settled by PostgreSQL, not by the replicas:

- a unique partial index on (org_id, rule_id, subject_key) over unresolved alerts plus
  ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` decides who raises an alert;
- ``UPDATE ... WHERE seq = $expected`` is the fencing step of every change (two replicas
  escalating the same alert: one update applies, the other sees 0 rows and does nothing);
- ``notifications_sent`` has a primary key on (alert_id, seq, channel): the intent written with
  the change, then claimed (with a lease) by one replica before it is sent (``_pgdelivery``);
- ``alert_policy_seq`` refuses a policy transition already applied (``_pgoutcomes``).

Each alert change, its ``AuditLogger`` record, its ``alert_outbox`` row (what the worker
publishes), its notification intents and, for a policy transition, the org's applied sequence
are written in one transaction. Tables: ``_pgschema``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.alerts._pgdelivery import PgDeliveryMixin, write_intents
from services.alerts._pgoutcomes import PgOutcomesMixin, policy_fence
from services.alerts._pgschema import SCHEMA
from services.alerts._serde import (
    alert_from_dict,
    alert_to_dict,
    policy_from_dict,
    policy_to_dict,
    rule_from_dict,
    rule_to_dict,
)
from services.alerts._tracker import IncidentKey, TrackedIncident
from services.alerts.models import Alert, AlertRule, EscalationPolicy
from services.alerts.store import Change, InsertOutcome, Notify, OpenKey, PolicySeq
from services.audit import AuditLogger

__all__ = ["PostgresAlertStore"]

_ALERT_VALUES = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb"
_INSERT_ALERT = f"""
INSERT INTO alerts (alert_id, org_id, rule_id, subject_key, incident_id, status, severity,
                    escalation_level, seq, created_at, updated_at, resolved_at, data)
SELECT {_ALERT_VALUES}
WHERE $14::timestamptz IS NULL OR NOT EXISTS (
    SELECT 1 FROM alerts
    WHERE org_id = $2 AND rule_id = $3 AND subject_key = $4
      AND status = 'resolved' AND resolved_at > $14)
ON CONFLICT (org_id, rule_id, subject_key) WHERE status <> 'resolved' DO NOTHING
RETURNING alert_id
"""
_OPEN_EXISTS = """
SELECT 1 FROM alerts WHERE org_id = $1 AND rule_id = $2 AND subject_key = $3
  AND status <> 'resolved'
"""
_UPDATE_ALERT = """
UPDATE alerts SET status = $2, severity = $3, escalation_level = $4, seq = $5,
                  updated_at = $6, resolved_at = $7, data = $8::jsonb
WHERE alert_id = $1 AND seq = $9
"""
# The change and its outbox row in one statement (one round trip fewer per alert change).
_INSERT_AND_QUEUE = f"""
WITH inserted AS ({_INSERT_ALERT.strip().removesuffix("RETURNING alert_id")}
    RETURNING alert_id, seq, data)
INSERT INTO alert_outbox (alert_id, seq, payload) SELECT alert_id, seq, data FROM inserted
RETURNING alert_id
"""
_UPDATE_AND_QUEUE = f"""
WITH updated AS ({_UPDATE_ALERT.strip()} RETURNING alert_id, seq, data)
INSERT INTO alert_outbox (alert_id, seq, payload) SELECT alert_id, seq, data FROM updated
RETURNING alert_id
"""


def _alert_args(alert: Alert) -> list[Any]:
    return [
        alert.alert_id,
        alert.org_id,
        alert.rule_id,
        alert.subject_key,
        alert.incident_id,
        alert.status.value,
        alert.severity.value,
        int(alert.escalation_level),
        alert.seq,
        alert.created_at,
        alert.updated_at,
        alert.resolved_at,
        json.dumps(alert_to_dict(alert)),
    ]


class PostgresAlertStore(PgDeliveryMixin, PgOutcomesMixin):
    """An ``AlertStore`` on an asyncpg pool of the audit database.

    Args:
        pool: the audit database's pool.
        audit: the logger changes are recorded with; it must write to the same database (a
            ``PostgresAuditStore`` on ``pool``) for change and record to share a transaction.
    """

    def __init__(self, pool: asyncpg.Pool, audit: AuditLogger) -> None:
        self._pool = pool
        self.audit = audit

    async def migrate(self) -> None:
        """Create tables and indexes (idempotent, safe when replicas start together)."""
        await self.audit.migrate()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(SCHEMA)

    async def _log(
        self,
        conn: asyncpg.Connection,
        change: Change,
        entity_type: str,
        entity_id: str,
        org_id: str | None,
    ) -> None:
        await self.audit.log(
            change.actor,
            change.action,
            entity_type,
            entity_id,
            before=change.before,
            after=change.after,
            org_id=org_id,
            at=change.at,
            conn=conn,
        )

    async def insert_alert(
        self,
        alert: Alert,
        change: Change,
        *,
        cooldown_since: datetime | None,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> InsertOutcome:
        """See ``AlertStore.insert_alert``."""
        async with self._pool.acquire() as conn, conn.transaction():
            await policy_fence(conn, policy_seq)
            args = _alert_args(alert)
            inserted = await conn.fetchval(_INSERT_AND_QUEUE, *args, cooldown_since)
            if inserted is not None:
                await write_intents(conn, alert, args[-1], notify)
                await self._log(conn, change, "alert", alert.alert_id, alert.org_id)
                return "inserted"
            is_open = await conn.fetchval(
                _OPEN_EXISTS, alert.org_id, alert.rule_id, alert.subject_key
            )
            return "open" if is_open else "cooling"

    async def update_alert(
        self,
        alert: Alert,
        change: Change,
        *,
        expected_seq: int,
        policy_seq: PolicySeq | None = None,
        notify: Notify | None = None,
    ) -> bool:
        """See ``AlertStore.update_alert``."""
        async with self._pool.acquire() as conn, conn.transaction():
            args = _alert_args(alert)
            updated = await conn.fetchval(
                _UPDATE_AND_QUEUE, args[0], *args[5:9], *args[10:], expected_seq
            )
            if updated is None:
                return False
            await policy_fence(conn, policy_seq)
            await write_intents(conn, alert, args[-1], notify)
            await self._log(conn, change, "alert", alert.alert_id, alert.org_id)
            return True

    async def get_alert(self, alert_id: str) -> Alert | None:
        """See ``AlertStore.get_alert``."""
        raw = await self._pool.fetchval("SELECT data FROM alerts WHERE alert_id = $1", alert_id)
        return None if raw is None else alert_from_dict(json.loads(raw))

    async def list_alerts(
        self, org_id: str | None, *, active_only: bool = True, incident_id: str | None = None
    ) -> list[Alert]:
        """See ``AlertStore.list_alerts``."""
        rows = await self._pool.fetch(
            "SELECT data FROM alerts WHERE ($1::text IS NULL OR org_id = $1) "
            "AND (NOT $2 OR status <> 'resolved') "
            "AND ($3::text IS NULL OR incident_id = $3) ORDER BY created_at, alert_id",
            org_id,
            active_only,
            incident_id,
        )
        return [alert_from_dict(json.loads(r["data"])) for r in rows]

    async def active_keys(self) -> set[OpenKey]:
        """See ``AlertStore.active_keys``."""
        rows = await self._pool.fetch(
            "SELECT org_id, rule_id, subject_key FROM alerts WHERE status <> 'resolved'"
        )
        return {(r["org_id"], r["rule_id"], r["subject_key"]) for r in rows}

    async def save_rule(self, rule: AlertRule, change: Change) -> None:
        """See ``AlertStore.save_rule``."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO alert_rules (rule_id, org_id, data, updated_at) "
                "VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (rule_id) DO UPDATE "
                "SET org_id = $2, data = $3::jsonb, updated_at = $4",
                rule.rule_id,
                rule.org_id,
                json.dumps(rule_to_dict(rule)),
                change.at,
            )
            await self._log(conn, change, "alert_rule", rule.rule_id, rule.org_id)

    async def delete_rule(self, rule_id: str, change: Change) -> bool:
        """See ``AlertStore.delete_rule``."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await conn.fetchrow(
                "DELETE FROM alert_rules WHERE rule_id = $1 RETURNING org_id", rule_id
            )
            if org is None:
                return False
            await self._log(conn, change, "alert_rule", rule_id, org["org_id"])
            return True

    async def load_rules(self) -> list[AlertRule]:
        """See ``AlertStore.load_rules``."""
        rows = await self._pool.fetch("SELECT data FROM alert_rules ORDER BY rule_id")
        return [rule_from_dict(json.loads(r["data"])) for r in rows]

    async def save_policy(self, org_id: str, policy: EscalationPolicy, change: Change) -> None:
        """See ``AlertStore.save_policy``."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO escalation_policies (org_id, data, updated_at) "
                "VALUES ($1, $2::jsonb, $3) ON CONFLICT (org_id) DO UPDATE "
                "SET data = $2::jsonb, updated_at = $3",
                org_id,
                json.dumps(policy_to_dict(policy)),
                change.at,
            )
            await self._log(conn, change, "escalation_policy", org_id, org_id)

    async def load_policies(self) -> dict[str, EscalationPolicy]:
        """See ``AlertStore.load_policies``."""
        rows = await self._pool.fetch("SELECT org_id, data FROM escalation_policies")
        return {r["org_id"]: policy_from_dict(json.loads(r["data"])) for r in rows}

    async def save_suppression(self, record: dict[str, Any], change: Change) -> None:
        """See ``AlertStore.save_suppression``."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO alert_suppressions (suppression_id, org_id, expires_at, data) "
                "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (suppression_id) DO NOTHING",
                record["suppression_id"],
                record["org_id"],
                datetime.fromtimestamp(record["expires_at"], UTC),
                json.dumps(record),
            )
            await self._log(
                conn, change, "alert_suppression", record["suppression_id"], record["org_id"]
            )

    async def delete_suppression(self, suppression_id: str, change: Change) -> bool:
        """See ``AlertStore.delete_suppression``."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM alert_suppressions WHERE suppression_id = $1 RETURNING org_id",
                suppression_id,
            )
            if row is None:
                return False
            await self._log(conn, change, "alert_suppression", suppression_id, row["org_id"])
            return True

    async def load_suppressions(self, now: datetime) -> list[dict[str, Any]]:
        """See ``AlertStore.load_suppressions``."""
        rows = await self._pool.fetch(
            "SELECT data FROM alert_suppressions WHERE expires_at > $1", now
        )
        return [json.loads(r["data"]) for r in rows]

    async def save_incident(self, incident: TrackedIncident) -> None:
        """See ``AlertStore.save_incident``."""
        await self._pool.execute(
            "INSERT INTO alert_incidents (org_id, incident_id, priority, dispatch_ts, region) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, incident_id) DO UPDATE "
            "SET priority = $3, dispatch_ts = $4, region = $5",
            incident.org_id,
            incident.incident_id,
            incident.priority,
            incident.dispatch_ts,
            incident.region,
        )

    async def delete_incident(self, key: IncidentKey) -> None:
        """See ``AlertStore.delete_incident``."""
        await self._pool.execute(
            "DELETE FROM alert_incidents WHERE org_id = $1 AND incident_id = $2", *key
        )

    async def load_incidents(self) -> list[TrackedIncident]:
        """See ``AlertStore.load_incidents``."""
        rows = await self._pool.fetch(
            "SELECT org_id, incident_id, priority, dispatch_ts, region FROM alert_incidents"
        )
        return [TrackedIncident(**dict(r)) for r in rows]

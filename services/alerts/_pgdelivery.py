"""Outbox draining and notification claims of ``PostgresAlertStore``.

- ``alert_outbox`` rows are written by ``insert_alert`` / ``update_alert`` in the alert's own
  transaction; ``drain_outbox`` locks a batch ``FOR UPDATE SKIP LOCKED`` (replicas drain
  disjoint rows), publishes each, and deletes the published ones before committing, so a row
  leaves only after JetStream acked it.
- ``notifications_sent`` holds one row per (alert, seq, channel): the alert as it was at that
  change (what a re-send sends), the claim (``claimed_by``, ``claim_token``, ``claimed_at``: the
  lease) and the outcome (``ok``, ``attempts``, ``error``, ``rounds``, ``retry_at``). The row is
  first written as an *intent* (``claimed_by`` NULL, ``claimed_at`` = when it became owed) by
  ``write_intents``, in the transaction of the alert change; ``claim_notification`` takes it with
  one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE claimed_by IS NULL`` (inserting the claim when
  there was no intent), so one sender wins. Intents left unclaimed past a grace, claims without
  an outcome past their lease and failed sends due for a retry are taken over with one
  conditional ``UPDATE`` over rows locked ``SKIP LOCKED``, so one replica sends each; an outcome
  is written only under the current ``claim_token``.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from services.alerts._serde import alert_from_dict, alert_to_dict
from services.alerts.models import Alert
from services.alerts.store import (
    INTENT_GRACE_S,
    Change,
    NotificationClaim,
    Notify,
    OutboxEntry,
    OutboxPublish,
)

if TYPE_CHECKING:
    from services.alerts.postgres import PostgresAlertStore

__all__ = ["PgDeliveryMixin", "write_intents"]

_DRAIN = """
SELECT alert_id, seq, payload FROM alert_outbox
WHERE created_at <= now() - make_interval(secs => $2)
ORDER BY created_at, alert_id, seq LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_OWE = """
INSERT INTO notifications_sent (alert_id, seq, channel, kind, alert)
SELECT $1, $2, channel, $3, $4::jsonb FROM unnest($5::text[]) AS channel
ON CONFLICT DO NOTHING
"""
# A row written before intents existed has no ``alert`` (and no claimant): never an intent.
_CLAIM = """
INSERT INTO notifications_sent AS n
    (alert_id, seq, channel, kind, alert, claimed_by, claim_token)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
ON CONFLICT (alert_id, seq, channel) DO UPDATE
SET claimed_at = now(), claimed_by = EXCLUDED.claimed_by, claim_token = EXCLUDED.claim_token
WHERE n.claimed_by IS NULL AND n.alert IS NOT NULL
RETURNING n.alert_id
"""


def _due(row: str) -> str:
    """Whether notification row ``row`` is to be taken over ($3: lease, $5: intent grace)."""
    return f"""{row}.alert IS NOT NULL AND (
        ({row}.claimed_by IS NULL AND {row}.claimed_at <= now() - make_interval(secs => $5))
        OR ({row}.claimed_by IS NOT NULL AND {row}.ok IS NULL
            AND {row}.claimed_at <= now() - make_interval(secs => $3))
        OR ({row}.ok = false AND {row}.retry_at <= now()))"""


_RECLAIM = f"""
UPDATE notifications_sent n
SET claimed_at = now(), claimed_by = $1, claim_token = $2, ok = NULL, retry_at = NULL
FROM (
    SELECT alert_id, seq, channel FROM notifications_sent d
    WHERE {_due("d")}
    ORDER BY claimed_at LIMIT $4
    FOR UPDATE SKIP LOCKED
) due
WHERE n.alert_id = due.alert_id AND n.seq = due.seq AND n.channel = due.channel
  AND {_due("n")}
RETURNING n.channel, n.kind, n.alert, n.rounds
"""
_RECORD = """
UPDATE notifications_sent
SET ok = $5::boolean, attempts = COALESCE(attempts, 0) + $6, error = $7, rounds = rounds + 1,
    retry_at = CASE WHEN $5::boolean OR $8::float8 IS NULL THEN NULL
                    ELSE now() + make_interval(secs => $8::float8) END
WHERE alert_id = $1 AND seq = $2 AND channel = $3 AND claim_token = $4
"""


async def write_intents(
    conn: asyncpg.Connection, alert: Alert, payload: str, notify: Notify | None
) -> None:
    """Record, in ``conn``'s transaction, that ``alert``'s change is owed on each channel of
    ``notify`` (``payload``: the alert as JSON)."""
    if notify is None or not notify[1]:
        return
    kind, channels = notify
    await conn.execute(
        _OWE, alert.alert_id, alert.seq, kind, payload, list(dict.fromkeys(channels))
    )


class PgDeliveryMixin:
    """Outbox and notification claims (mixed into ``PostgresAlertStore``)."""

    # ------------------------------------------------------------ outbox
    async def drain_outbox(
        self: PostgresAlertStore,
        publish: OutboxPublish,
        *,
        limit: int = 500,
        min_age_s: float = 0.0,
    ) -> int:
        """See ``AlertStore.drain_outbox``."""
        done: list[tuple[str, int]] = []
        failure: BaseException | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            for row in await conn.fetch(_DRAIN, limit, float(min_age_s)):
                entry = OutboxEntry(row["alert_id"], row["seq"], json.loads(row["payload"]))
                try:
                    await publish(entry)
                except Exception as exc:  # committed below what was acked, then re-raised
                    failure = exc
                    break
                done.append((entry.alert_id, entry.seq))
            if done:
                await conn.executemany(
                    "DELETE FROM alert_outbox WHERE alert_id = $1 AND seq = $2", done
                )
        if failure is not None:
            raise failure
        return len(done)

    async def mark_published(self: PostgresAlertStore, alert_id: str, seq: int) -> None:
        """See ``AlertStore.mark_published``."""
        await self._pool.execute(
            "DELETE FROM alert_outbox WHERE alert_id = $1 AND seq = $2", alert_id, seq
        )

    async def outbox_lag_s(self: PostgresAlertStore) -> float | None:
        """See ``AlertStore.outbox_lag_s``."""
        lag = await self._pool.fetchval(
            "SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM alert_outbox"
        )
        return None if lag is None else float(lag)

    async def outbox_size(self: PostgresAlertStore) -> int:
        """Unpublished changes (for tests and operators)."""
        return int(await self._pool.fetchval("SELECT count(*) FROM alert_outbox"))

    # ------------------------------------------------------------ notification claims
    async def claim_notification(
        self: PostgresAlertStore, alert: Alert, channel: str, kind: str, claimant: str
    ) -> NotificationClaim | None:
        """See ``AlertStore.claim_notification``."""
        token = uuid.uuid4().hex
        claimed = await self._pool.fetchval(
            _CLAIM,
            alert.alert_id,
            alert.seq,
            channel,
            kind,
            json.dumps(alert_to_dict(alert)),
            claimant,
            token,
        )
        return None if claimed is None else NotificationClaim(alert, channel, kind, token, 0)

    async def reclaim_notifications(
        self: PostgresAlertStore,
        claimant: str,
        *,
        lease_s: float,
        intent_grace_s: float = INTENT_GRACE_S,
        limit: int = 100,
    ) -> list[NotificationClaim]:
        """See ``AlertStore.reclaim_notifications``."""
        token = uuid.uuid4().hex
        rows = await self._pool.fetch(
            _RECLAIM, claimant, token, float(lease_s), limit, float(intent_grace_s)
        )
        return [
            NotificationClaim(
                alert_from_dict(json.loads(r["alert"])),
                r["channel"],
                r["kind"] or "opened",
                token,
                int(r["rounds"]),
            )
            for r in rows
        ]

    async def record_delivery(
        self: PostgresAlertStore,
        claim: NotificationClaim,
        outcome: dict[str, Any],
        change: Change,
        *,
        retry_in_s: float | None,
    ) -> bool:
        """See ``AlertStore.record_delivery``."""
        alert = claim.alert
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                _RECORD,
                alert.alert_id,
                alert.seq,
                claim.channel,
                claim.token,
                bool(outcome.get("ok")),
                int(outcome.get("attempts") or 0),
                outcome.get("error"),
                retry_in_s,
            )
            await self._log(conn, change, "alert", alert.alert_id, alert.org_id)
        return status == "UPDATE 1"

    async def deliveries(self: PostgresAlertStore) -> list[dict[str, Any]]:
        """Every notification owed or claimed, and its outcome (for tests and operators;
        ``claimed_by`` None: an intent nobody claimed yet)."""
        rows = await self._pool.fetch(
            "SELECT alert_id, seq, channel, ok, attempts, error, rounds, claimed_by, retry_at "
            "FROM notifications_sent ORDER BY claimed_at"
        )
        return [dict(r) for r in rows]

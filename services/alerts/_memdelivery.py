"""Outbox and notification claims of ``InMemoryAlertStore`` (one process, monotonic time).

The same rules as PostgreSQL: an outbox entry leaves only after ``publish`` returned, entries
being drained are skipped by a concurrent drain (``SKIP LOCKED``), an intent written with its
alert change (``claimed_by`` None) is taken by one claim, or by a reclaim once its grace is
over; a claim is re-taken only when its lease expired without an outcome or its retry time has
come, and an outcome is recorded only by the holder of the current claim token.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from services.alerts._serde import alert_to_dict
from services.alerts.models import Alert
from services.alerts.store import (
    INTENT_GRACE_S,
    Change,
    NotificationClaim,
    Notify,
    OutboxEntry,
    OutboxPublish,
)

__all__ = ["MemDeliveryMixin"]

_ClaimKey = tuple[str, int, str]


class MemDeliveryMixin:
    """Outbox and notification claims (mixed into ``InMemoryAlertStore``)."""

    def _init_delivery(self, outbox: bool) -> None:
        self._outbox_on = outbox
        self._outbox: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
        self._draining: set[tuple[str, int]] = set()
        self._claims: dict[_ClaimKey, dict[str, Any]] = {}

    def _queue(self, alert: Alert, notify: Notify | None) -> None:
        """Queue a stored change for publication and write its notification intents."""
        if self._outbox_on:
            self._outbox[(alert.alert_id, alert.seq)] = (time.monotonic(), alert_to_dict(alert))
        if notify is None:
            return
        kind, channels = notify
        for channel in channels:
            self._claims.setdefault((alert.alert_id, alert.seq, channel), _row(alert, kind))

    # ------------------------------------------------------------ outbox
    async def drain_outbox(
        self, publish: OutboxPublish, *, limit: int = 500, min_age_s: float = 0.0
    ) -> int:
        """See ``AlertStore.drain_outbox``."""
        cutoff = time.monotonic() - min_age_s
        batch = [
            key
            for key, (queued, _) in sorted(self._outbox.items(), key=lambda kv: kv[1][0])
            if queued <= cutoff and key not in self._draining
        ][:limit]
        self._draining.update(batch)
        published = 0
        try:
            for key in batch:
                entry = self._outbox.get(key)
                if entry is None:
                    continue  # the fast path published it meanwhile
                await publish(OutboxEntry(key[0], key[1], entry[1]))
                self._outbox.pop(key, None)
                published += 1
        finally:
            self._draining.difference_update(batch)
        return published

    async def mark_published(self, alert_id: str, seq: int) -> None:
        """See ``AlertStore.mark_published``."""
        self._outbox.pop((alert_id, seq), None)

    async def outbox_lag_s(self) -> float | None:
        """See ``AlertStore.outbox_lag_s``."""
        if not self._outbox:
            return None
        return time.monotonic() - min(queued for queued, _ in self._outbox.values())

    # ------------------------------------------------------------ notification claims
    async def claim_notification(
        self, alert: Alert, channel: str, kind: str, claimant: str
    ) -> NotificationClaim | None:
        """See ``AlertStore.claim_notification``."""
        row = self._claims.setdefault((alert.alert_id, alert.seq, channel), _row(alert, kind))
        if row["claimed_by"] is not None:
            return None
        token = uuid.uuid4().hex
        row.update(claimed_at=time.monotonic(), claimed_by=claimant, token=token)
        return NotificationClaim(alert, channel, kind, token, 0)

    async def reclaim_notifications(
        self,
        claimant: str,
        *,
        lease_s: float,
        intent_grace_s: float = INTENT_GRACE_S,
        limit: int = 100,
    ) -> list[NotificationClaim]:
        """See ``AlertStore.reclaim_notifications``."""
        now = time.monotonic()
        taken: list[NotificationClaim] = []
        for (_, _, channel), row in self._claims.items():
            if len(taken) >= limit:
                break
            if row["claimed_by"] is None:
                due = row["claimed_at"] <= now - intent_grace_s
            else:
                vanished = row["ok"] is None and row["claimed_at"] <= now - lease_s
                due = vanished or (
                    row["ok"] is False and row["retry_at"] is not None and row["retry_at"] <= now
                )
            if not due:
                continue
            token = uuid.uuid4().hex
            row.update(ok=None, claimed_at=now, claimed_by=claimant, token=token, retry_at=None)
            alert = copy.deepcopy(row["alert"])
            taken.append(NotificationClaim(alert, channel, row["kind"], token, row["rounds"]))
        return taken

    async def record_delivery(
        self,
        claim: NotificationClaim,
        outcome: dict[str, Any],
        change: Change,
        *,
        retry_in_s: float | None,
    ) -> bool:
        """See ``AlertStore.record_delivery``."""
        async with self._lock:  # type: ignore[attr-defined]
            await self._log(change, "alert", claim.alert.alert_id, claim.alert.org_id)  # type: ignore[attr-defined]
        row = self._claims.get((claim.alert.alert_id, claim.alert.seq, claim.channel))
        if row is None or row["token"] != claim.token:
            return False
        ok = bool(outcome.get("ok"))
        row.update(
            ok=ok,
            attempts=row["attempts"] + int(outcome.get("attempts") or 0),
            error=outcome.get("error"),
            rounds=row["rounds"] + 1,
            retry_at=None if ok or retry_in_s is None else time.monotonic() + retry_in_s,
        )
        return True

    def deliveries(self) -> dict[_ClaimKey, dict[str, Any]]:
        """Every intent and claim and its state (``claimed_by`` None: not claimed yet; ``ok``
        None while in flight); for tests."""
        return {k: {n: v for n, v in r.items() if n != "alert"} for k, r in self._claims.items()}


def _row(alert: Alert, kind: str) -> dict[str, Any]:
    """A notification owed and not claimed yet (``claimed_at``: since when it is owed)."""
    return {
        "alert": copy.deepcopy(alert),
        "kind": kind,
        "claimed_at": time.monotonic(),
        "claimed_by": None,
        "token": None,
        "ok": None,
        "attempts": 0,
        "error": None,
        "rounds": 0,
        "retry_at": None,
    }

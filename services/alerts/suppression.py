"""``AlertSuppressionManager``: temporary, per-org suppression of alert rules.

A suppression's ``rule_pattern`` is a user-supplied regular expression matched in full
(``fullmatch``) against rule ids. It runs on RE2 (``google-re2``), whose matching time is linear
in the input, so no pattern (``(a+)+$`` included) can stall the service; a pattern RE2 refuses
(back-references, look-around, too big) is a ``ValidationError`` naming ``rule_pattern``.

The contract's methods are synchronous and serve this process. A worker running several
replicas uses the async ``add`` / ``remove`` / ``is_suppressed_shared`` / ``refresh``, which
also write the audit database (the record of truth) and the hot state (Redis when configured),
so every replica sees a suppression as soon as it is made.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import re2
import structlog

from ionveil.errors import ValidationError
from services.alerts.hotstate import HotState
from services.alerts.models import MAX_TEXT_LENGTH
from services.alerts.store import AlertStore, Change

__all__ = ["MAX_PATTERN_LENGTH", "MAX_SUPPRESSION_MINUTES", "AlertSuppressionManager"]

log = structlog.get_logger(__name__)

MAX_PATTERN_LENGTH = 512
MAX_SUPPRESSION_MINUTES = 7 * 24 * 60
_NAMESPACE = "suppressions"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the caller, not to stderr
_RE2_OPTIONS.max_mem = 1 << 20  # bound the compiled program: 1 MiB


def _utcnow() -> datetime:
    return datetime.now(UTC)


def compile_pattern(pattern: object) -> Any:
    """Compile a suppression pattern with RE2.

    Raises:
        ValidationError: naming ``rule_pattern`` when it is not a string, too long, or refused.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError("rule_pattern: must be a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValidationError(f"rule_pattern: at most {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValidationError(f"rule_pattern: not accepted by RE2: {detail}") from None


def _check_text(name: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name}: must be a non-empty string")
    elif len(value) > MAX_TEXT_LENGTH * (4 if name == "reason" else 1):
        problems.append(f"{name}: too long")


class AlertSuppressionManager:
    """Manages alert suppression windows and rules.

    Args:
        clock: returns the current aware time (tests inject one to expire suppressions).
        store: where suppressions are persisted by the async methods (optional).
        hot_state: where replicas share active suppressions (optional).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        store: AlertStore | None = None,
        hot_state: HotState | None = None,
    ) -> None:
        self._clock = clock or _utcnow
        self._store = store
        self._hot = hot_state
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._compiled: dict[str, Any] = {}
        self._persisted: set[str] = set()  # ids whose truth is the store / hot state

    def bind(
        self,
        *,
        store: AlertStore | None,
        hot_state: HotState | None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Attach persistence after construction (``SLAMonitorService`` does this)."""
        self._store = store if store is not None else self._store
        self._hot = hot_state if hot_state is not None else self._hot
        if clock is not None:
            self._clock = clock

    def _new_record(
        self, org_id: str, rule_pattern: str, duration_minutes: int, reason: str, created_by: str
    ) -> dict[str, Any]:
        problems: list[str] = []
        _check_text("org_id", org_id, problems)
        _check_text("reason", reason, problems)
        _check_text("created_by", created_by, problems)
        if (
            not isinstance(duration_minutes, int | float)
            or isinstance(duration_minutes, bool)
            or not 0 < duration_minutes <= MAX_SUPPRESSION_MINUTES
        ):
            problems.append(f"duration_minutes: must be a number in (0, {MAX_SUPPRESSION_MINUTES}]")
        try:
            compile_pattern(rule_pattern)
        except ValidationError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ValidationError(problems)
        now = self._clock()
        return {
            "suppression_id": f"sup-{uuid.uuid4().hex}",
            "org_id": org_id,
            "rule_pattern": rule_pattern,
            "reason": reason,
            "created_by": created_by,
            "created_at": now.timestamp(),
            "expires_at": (now + timedelta(minutes=duration_minutes)).timestamp(),
        }

    def _put(self, record: dict[str, Any], *, persisted: bool = False) -> None:
        with self._lock:
            sid = record["suppression_id"]
            self._compiled[sid] = compile_pattern(record["rule_pattern"])
            self._records[sid] = record
            if persisted:
                self._persisted.add(sid)

    def _forget_persisted(self, keep: set[str], org_id: str | None = None) -> None:
        with self._lock:
            for sid in list(self._persisted):
                record = self._records.get(sid)
                if sid in keep or (org_id is not None and record and record["org_id"] != org_id):
                    continue
                self._persisted.discard(sid)
                self._records.pop(sid, None)
                self._compiled.pop(sid, None)

    def _expire(self) -> None:
        now = self._clock().timestamp()
        with self._lock:
            for sid in [s for s, r in self._records.items() if r["expires_at"] <= now]:
                del self._records[sid]
                self._compiled.pop(sid, None)

    def add_suppression(
        self, org_id: str, rule_pattern: str, duration_minutes: int, reason: str, created_by: str
    ) -> str:
        """Add a temporary alert suppression (in this process; see ``add`` for replicas).

        Args:
            org_id: Organisation to suppress alerts for.
            rule_pattern: RE2 regular expression matched in full against rule ids.
            duration_minutes: How long to suppress (0 < minutes <= one week).
            reason: Reason for suppression.
            created_by: User creating the suppression.

        Returns:
            Suppression ID.

        Raises:
            ValidationError: a field is invalid (the message names it).
        """
        record = self._new_record(org_id, rule_pattern, duration_minutes, reason, created_by)
        self._put(record)
        log.info("suppression_added", suppression_id=record["suppression_id"], org_id=org_id)
        return record["suppression_id"]

    def is_suppressed(self, org_id: str, rule_id: str) -> bool:
        """Check if a rule is currently suppressed for an org (this process's view)."""
        self._expire()
        with self._lock:
            return any(
                record["org_id"] == org_id and self._compiled[sid].fullmatch(rule_id) is not None
                for sid, record in self._records.items()
            )

    def remove_suppression(self, suppression_id: str) -> bool:
        """Remove a suppression early; False if not found or already expired."""
        self._expire()
        with self._lock:
            self._compiled.pop(suppression_id, None)
            return self._records.pop(suppression_id, None) is not None

    def get_active_suppressions(self, org_id: str) -> list[dict[str, Any]]:
        """Active suppression records of an org, oldest first (times as RFC 3339)."""
        self._expire()
        with self._lock:
            records = [dict(r) for r in self._records.values() if r["org_id"] == org_id]
        records.sort(key=lambda r: r["created_at"])
        for record in records:
            for name in ("created_at", "expires_at"):
                record[name] = datetime.fromtimestamp(record[name], UTC).isoformat()
        return records

    async def add(
        self, org_id: str, rule_pattern: str, duration_minutes: int, reason: str, created_by: str
    ) -> str:
        """``add_suppression``, persisted (audited) and shared with other replicas."""
        record = self._new_record(org_id, rule_pattern, duration_minutes, reason, created_by)
        if self._store is not None:
            change = Change(created_by, "suppression.added", self._clock(), after=record)
            await self._store.save_suppression(record, change)
        if self._hot is not None:
            ttl_s = record["expires_at"] - self._clock().timestamp()
            await self._hot.put_record(
                f"{_NAMESPACE}:{org_id}", record["suppression_id"], record, ttl_s
            )
        self._put(record, persisted=True)
        return record["suppression_id"]

    async def remove(self, suppression_id: str, *, actor: str = "system") -> bool:
        """``remove_suppression``, persisted (audited) and shared with other replicas."""
        with self._lock:
            record = self._records.get(suppression_id)
        removed = self.remove_suppression(suppression_id)
        if self._store is not None:
            change = Change(actor, "suppression.removed", self._clock(), before=record)
            removed = await self._store.delete_suppression(suppression_id, change) or removed
        if self._hot is not None and record is not None:
            await self._hot.drop_record(f"{_NAMESPACE}:{record['org_id']}", suppression_id)
        return removed

    async def refresh(self) -> None:
        """Replace this process's view with the store's active suppressions."""
        if self._store is None:
            return
        records = await self._store.load_suppressions(self._clock())
        self._forget_persisted({r["suppression_id"] for r in records})
        for record in records:
            self._put(record, persisted=True)

    async def is_suppressed_shared(self, org_id: str, rule_id: str) -> bool:
        """``is_suppressed`` after merging the org's suppressions from the shared hot state."""
        if self._hot is not None and self._hot.shared:
            now = self._clock().timestamp()
            shared = await self._hot.records(f"{_NAMESPACE}:{org_id}")
            live = {sid: r for sid, r in shared.items() if r["expires_at"] > now}
            for sid in shared.keys() - live.keys():
                await self._hot.drop_record(f"{_NAMESPACE}:{org_id}", sid)
            # The hot state is the shared truth: a suppression removed by another replica goes.
            self._forget_persisted(set(live), org_id)
            for record in live.values():
                self._put(record, persisted=True)
        return self.is_suppressed(org_id, rule_id)

"""``AuditLogger``: the API services use to write and read the audit trail."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from ionveil.errors import ValidationError
from services.audit._chain import dump_state
from services.audit.models import AuditEntry, AuditRecord, ChainReport
from services.audit.store import AuditStore

__all__ = ["MAX_FIELD_LENGTH", "MAX_QUERY_LIMIT", "AuditLogger"]

log = structlog.get_logger(__name__)

MAX_FIELD_LENGTH = 256
"""Longest ``actor``, ``action``, ``entity_type``, ``entity_id`` or ``org_id`` accepted."""

MAX_QUERY_LIMIT = 10_000
"""Most records one ``query`` returns."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_text(name: str, value: object, problems: list[str], *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name}: must be a non-empty string")
    elif len(value) > MAX_FIELD_LENGTH:
        problems.append(f"{name}: at most {MAX_FIELD_LENGTH} characters, got {len(value)}")


def _check_time(name: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, datetime):
        problems.append(f"{name}: must be a datetime, got {type(value).__name__}")
    elif value.tzinfo is None or value.utcoffset() is None:
        problems.append(f"{name}: must be timezone-aware")


class AuditLogger:
    """Append-only, hash-chained audit trail of who changed what.

    Every record carries the hash of its predecessor, so editing, removing or reordering stored
    records is detected by ``verify_chain()``. Storage is whatever ``AuditStore`` it is given:
    ``PostgresAuditStore`` in the audit database, ``InMemoryAuditStore`` in tests.

    Args:
        store: where records are kept.
        clock: returns the current aware time; used when a caller gives no ``at``.
    """

    def __init__(self, store: AuditStore, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._store = store
        self._clock = clock

    @property
    def store(self) -> AuditStore:
        """The store records go to."""
        return self._store

    async def migrate(self) -> None:
        """Create the store's schema (idempotent)."""
        await self._store.migrate()

    def _prepare(self, entry: AuditEntry, where: str = "") -> AuditEntry:
        problems: list[str] = []
        _check_text(f"{where}actor", entry.actor, problems)
        _check_text(f"{where}action", entry.action, problems)
        _check_text(f"{where}entity_type", entry.entity_type, problems)
        _check_text(f"{where}entity_id", entry.entity_id, problems)
        _check_text(f"{where}org_id", entry.org_id, problems, optional=True)
        for name in ("before", "after"):
            try:
                dump_state(f"{where}{name}", getattr(entry, name))
            except ValidationError as exc:
                problems.extend(exc.problems)
        at = entry.at if entry.at is not None else self._clock()
        _check_time(f"{where}at", at, problems)
        if problems:
            raise ValidationError(problems)
        if entry.at is None:
            entry = AuditEntry(
                entry.actor,
                entry.action,
                entry.entity_type,
                entry.entity_id,
                before=entry.before,
                after=entry.after,
                org_id=entry.org_id,
                at=at,
            )
        return entry

    async def log(
        self,
        actor: str,
        action: str,
        entity_type: str,
        entity_id: str,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        org_id: str | None = None,
        at: datetime | None = None,
        conn: Any = None,
    ) -> AuditRecord:
        """Append one record.

        Args:
            actor: who did it (a user, a service, ``"system"``).
            action: what was done, e.g. ``"alert.acknowledged"``.
            entity_type: kind of thing changed, e.g. ``"alert"``.
            entity_id: which one.
            before: its state before the change (JSON-serialisable mapping), if any.
            after: its state after the change, if any.
            org_id: the org it belongs to, if any.
            at: when it happened (aware); the logger's clock when omitted.
            conn: an asyncpg connection already in a transaction, so that the caller's state
                change and its audit record commit or roll back together.

        Raises:
            ValidationError: a field is missing, too long, naive, or not JSON-serialisable.
        """
        entry = AuditEntry(
            actor,
            action,
            entity_type,
            entity_id,
            before=dict(before) if isinstance(before, Mapping) else before,
            after=dict(after) if isinstance(after, Mapping) else after,
            org_id=org_id,
            at=at,
        )
        (record,) = await self._store.append([self._prepare(entry)], conn=conn)
        return record

    async def log_many(
        self, entries: Sequence[AuditEntry], *, conn: Any = None
    ) -> list[AuditRecord]:
        """Append several records in order, in one store call (one insert with PostgreSQL).

        All entries are validated before anything is written: one bad entry writes none.

        Raises:
            ValidationError: listing every problem, each prefixed with ``entries[i].``.
        """
        prepared: list[AuditEntry] = []
        problems: list[str] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, AuditEntry):
                problems.append(f"entries[{i}]: must be an AuditEntry")
                continue
            try:
                prepared.append(self._prepare(entry, f"entries[{i}]."))
            except ValidationError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ValidationError(problems)
        if not prepared:
            return []
        return await self._store.append(prepared, conn=conn)

    async def for_entity(self, entity_type: str, entity_id: str) -> list[AuditRecord]:
        """The history of one entity, oldest first."""
        return await self._store.for_entity(entity_type, entity_id)

    async def query(
        self,
        org_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Records matching every given filter (``None`` = any), oldest first.

        Args:
            org_id: only this org's records.
            actor: only this actor's.
            action: only this action.
            since: only records at or after this aware time (page forward with it).
            limit: at most this many, 1 to ``MAX_QUERY_LIMIT``.

        Raises:
            ValidationError: a bad limit or a naive ``since``.
        """
        problems: list[str] = []
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not (1 <= limit <= MAX_QUERY_LIMIT)
        ):
            problems.append(f"limit: must be an integer from 1 to {MAX_QUERY_LIMIT}")
        if since is not None:
            _check_time("since", since, problems)
        if problems:
            raise ValidationError(problems)
        return await self._store.query(
            org_id=org_id, actor=actor, action=action, since=since, limit=limit
        )

    async def verify_chain(self) -> ChainReport:
        """Walk the whole chain: ``ok`` false and ``first_bad_seq`` set when it was tampered."""
        report = await self._store.verify_chain()
        log.info("audit_chain_verified", ok=report.ok, checked=report.checked)
        return report

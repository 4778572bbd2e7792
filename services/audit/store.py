"""Where audit records live: the store Protocol and the in-process implementation."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from services.audit._chain import chain, verify_records
from services.audit.models import GENESIS_HASH, AuditEntry, AuditRecord, ChainReport

__all__ = ["AuditStore", "InMemoryAuditStore"]


@runtime_checkable
class AuditStore(Protocol):
    """What ``AuditLogger`` needs from storage.

    ``append`` receives validated entries with ``at`` set; it must read the chain head and write
    the new records as one serialised step, so that concurrent writers never fork the chain.
    """

    async def migrate(self) -> None:
        """Create whatever the store needs (idempotent)."""
        ...

    async def append(self, entries: Sequence[AuditEntry], *, conn: Any = None) -> list[AuditRecord]:
        """Chain and store ``entries`` in order; ``conn``: a caller's transaction to join."""
        ...

    async def for_entity(self, entity_type: str, entity_id: str) -> list[AuditRecord]:
        """Every record of one entity, oldest first."""
        ...

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
        ...

    async def verify_chain(self) -> ChainReport:
        """Walk the whole chain and report the first broken link."""
        ...


class InMemoryAuditStore:
    """An ``AuditStore`` in process memory, for tests and in-process use.

    It has no transactions: ``conn`` is accepted for interface compatibility and ignored.
    Appends are serialised by a lock, so threads and tasks sharing it still chain correctly.
    """

    def __init__(self) -> None:
        self._records: list[AuditRecord] = []
        self._lock = threading.Lock()

    async def migrate(self) -> None:
        """Nothing to create."""

    async def append(self, entries: Sequence[AuditEntry], *, conn: Any = None) -> list[AuditRecord]:
        """Chain ``entries`` after the current head and keep them."""
        with self._lock:
            head_seq = self._records[-1].seq if self._records else 0
            head_hash = self._records[-1].hash if self._records else GENESIS_HASH
            out = [record for record, _, _ in chain(head_seq, head_hash, entries)]
            self._records.extend(out)
        return out

    async def for_entity(self, entity_type: str, entity_id: str) -> list[AuditRecord]:
        """Every record of one entity, oldest first."""
        with self._lock:
            return [
                r
                for r in self._records
                if r.entity_type == entity_type and r.entity_id == entity_id
            ]

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
        out: list[AuditRecord] = []
        with self._lock:
            for r in self._records:
                if (
                    (org_id is None or r.org_id == org_id)
                    and (actor is None or r.actor == actor)
                    and (action is None or r.action == action)
                    and (since is None or r.timestamp >= since)
                ):
                    out.append(r)
                    if len(out) >= limit:
                        break
        return out

    async def verify_chain(self) -> ChainReport:
        """Walk the whole chain held in memory."""
        with self._lock:
            records = list(self._records)
        return verify_records(records, GENESIS_HASH)

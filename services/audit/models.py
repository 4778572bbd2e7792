"""Values of the audit trail: what a caller logs, what is stored, what a chain check finds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditRecord", "ChainReport"]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first record of a chain."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One thing to record, before the store gives it a place in the chain.

    ``at`` defaults to the logger's clock when ``None``.
    """

    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    org_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored audit record, chained to its predecessor.

    ``hash`` is the SHA-256 (hex) of the canonical JSON of every other field, ``prev_hash``
    included, so changing any field of any record, or removing or reordering records, breaks the
    chain from that record on (``AuditLogger.verify_chain``).
    """

    seq: int
    actor: str
    action: str
    entity_type: str
    entity_id: str
    org_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    timestamp: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of walking the chain from its first record.

    Attributes:
        ok: every record checked is intact and linked to its predecessor.
        checked: how many records were read.
        first_bad_seq: the first chain position that fails (a record whose hash does not match
            its content or whose ``prev_hash`` does not match its predecessor, or the position
            of a missing record); ``None`` when ``ok``.
        head_hash: hash of the last record read (``None`` for an empty chain). Removing records
            from the *end* of a chain cannot be seen from inside it; keep this value somewhere
            else (a log line, another system) to detect that too.
        reason: what failed, in words; ``None`` when ``ok``.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None
    head_hash: str | None = None
    reason: str | None = None

"""Canonical JSON, record hashing and chaining: the part every store shares."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

from ionveil.errors import ValidationError
from services.audit.models import AuditEntry, AuditRecord, ChainReport

__all__ = [
    "ChainVerifier",
    "canonical_json",
    "chain",
    "dump_state",
    "format_timestamp",
    "load_state",
    "record_hash",
    "verify_records",
]


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept, NaN/Infinity refused."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: the one spelling of a time inside a hash."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def dump_state(field: str, value: Mapping[str, Any] | None) -> str | None:
    """``before``/``after`` as canonical JSON text (what is stored and hashed).

    Raises:
        ValidationError: not a mapping, or holds something JSON cannot carry (the field named).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field}: must be a mapping or None, got {type(value).__name__}")
    try:
        return canonical_json(dict(value))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{field}: not JSON serialisable ({exc})") from exc


def load_state(text: str | None) -> dict[str, Any] | None:
    """Inverse of ``dump_state``."""
    return None if text is None else json.loads(text)


def record_hash(
    *,
    seq: int,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    org_id: str | None,
    before: str | None,
    after: str | None,
    timestamp: datetime,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) over the canonical JSON of a record's fields and its ``prev_hash``.

    ``before``/``after`` enter as their canonical JSON text, so the hash depends on exactly the
    bytes stored (a JSONB column would renormalise numbers and break the chain).
    """
    body = canonical_json(
        {
            "seq": seq,
            "actor": actor,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "org_id": org_id,
            "before": before,
            "after": after,
            "timestamp": format_timestamp(timestamp),
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _hash_of(record: AuditRecord) -> str:
    return record_hash(
        seq=record.seq,
        actor=record.actor,
        action=record.action,
        entity_type=record.entity_type,
        entity_id=record.entity_id,
        org_id=record.org_id,
        before=dump_state("before", record.before),
        after=dump_state("after", record.after),
        timestamp=record.timestamp,
        prev_hash=record.prev_hash,
    )


def chain(
    head_seq: int, head_hash: str, entries: Iterable[AuditEntry]
) -> Iterator[tuple[AuditRecord, str | None, str | None]]:
    """Records for ``entries`` following the chain head ``(head_seq, head_hash)``.

    Every entry must already be validated with ``at`` set. Yields each record with the stored
    text of its ``before`` and ``after``.
    """
    seq, prev = head_seq, head_hash
    for entry in entries:
        if entry.at is None:  # the logger fills it in; a store called directly must too
            raise ValidationError("at: an audit entry needs a timestamp")
        seq += 1
        before = dump_state("before", entry.before)
        after = dump_state("after", entry.after)
        digest = record_hash(
            seq=seq,
            actor=entry.actor,
            action=entry.action,
            entity_type=entry.entity_type,
            entity_id=entry.entity_id,
            org_id=entry.org_id,
            before=before,
            after=after,
            timestamp=entry.at,
            prev_hash=prev,
        )
        record = AuditRecord(
            seq=seq,
            actor=entry.actor,
            action=entry.action,
            entity_type=entry.entity_type,
            entity_id=entry.entity_id,
            org_id=entry.org_id,
            before=load_state(before),
            after=load_state(after),
            timestamp=entry.at.astimezone(UTC),
            prev_hash=prev,
            hash=digest,
        )
        yield record, before, after
        prev = digest


class ChainVerifier:
    """Checks records fed in seq order, one page at a time (so a long chain fits in memory)."""

    def __init__(self, genesis_hash: str) -> None:
        self.checked = 0
        self._expected_seq = 1
        self._prev = genesis_hash
        self.head_hash: str | None = None
        self.first_bad_seq: int | None = None
        self.reason: str | None = None

    def feed(self, records: Iterable[AuditRecord]) -> bool:
        """Check the next records; False (and stop) at the first broken link."""
        for record in records:
            self.checked += 1
            problem = None
            if record.seq != self._expected_seq:
                problem = f"record {self._expected_seq} is missing (found seq {record.seq})"
            elif record.prev_hash != self._prev:
                problem = f"record {record.seq}: prev_hash does not match record {record.seq - 1}"
            elif _hash_of(record) != record.hash:
                problem = f"record {record.seq}: content does not match its hash"
            if problem is not None:
                self.first_bad_seq = self._expected_seq
                self.reason = problem
                return False
            self._prev = record.hash
            self.head_hash = record.hash
            self._expected_seq += 1
        return True

    def report(self) -> ChainReport:
        """The verdict so far."""
        return ChainReport(
            ok=self.first_bad_seq is None,
            checked=self.checked,
            first_bad_seq=self.first_bad_seq,
            head_hash=self.head_hash,
            reason=self.reason,
        )


def verify_records(records: Iterable[AuditRecord], genesis_hash: str) -> ChainReport:
    """Walk a whole chain held in memory."""
    verifier = ChainVerifier(genesis_hash)
    verifier.feed(records)
    return verifier.report()

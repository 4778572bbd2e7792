"""Audit: an append-only, hash-chained trail of who changed what (``AuditLogger``)."""

from services.audit.logger import MAX_FIELD_LENGTH, MAX_QUERY_LIMIT, AuditLogger
from services.audit.models import GENESIS_HASH, AuditEntry, AuditRecord, ChainReport
from services.audit.postgres import PostgresAuditStore
from services.audit.store import AuditStore, InMemoryAuditStore

__all__ = [
    "GENESIS_HASH",
    "MAX_FIELD_LENGTH",
    "MAX_QUERY_LIMIT",
    "AuditEntry",
    "AuditLogger",
    "AuditRecord",
    "AuditStore",
    "ChainReport",
    "InMemoryAuditStore",
    "PostgresAuditStore",
]

"""The live policy service: per-org escalation engines fed by dispatch outcomes.

``LivePolicyService`` applies outcomes exactly once per event id over a ``PolicyStore``
(``PostgresPolicyStore`` in the core database, ``InMemoryPolicyStore`` in process); the worker
in ``workers/policy.py`` binds it to NATS.
"""

from services.policy.live import DEFAULT_HISTORY_LIMIT, LivePolicyService, parse_config
from services.policy.models import (
    ApplyResult,
    LiveOutcome,
    OrgPolicyState,
    OutboxEntry,
    transition_payload,
)
from services.policy.pg_store import PostgresPolicyStore
from services.policy.store import InMemoryPolicyStore, PolicyStore

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "ApplyResult",
    "InMemoryPolicyStore",
    "LiveOutcome",
    "LivePolicyService",
    "OrgPolicyState",
    "OutboxEntry",
    "PolicyStore",
    "PostgresPolicyStore",
    "parse_config",
    "transition_payload",
]

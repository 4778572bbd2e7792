"""IonVeil SLA monitoring and alerting service (seed Task 3).

Proactive SLA monitoring with configurable alert rules, escalation chains, suppressions and
notification channels, every alert state change audited. ``SLAMonitorService()`` works bare,
in this process; a worker (``workers/alerts.py``) gives it a ``PostgresAlertStore``, a
``RedisHotState``, the notification channels and a NATS publisher (fed from a transactional
outbox, see ``services.alerts.outbox``).
"""

from services.alerts._lifecycle import TRANSITIONS, IllegalTransitionError
from services.alerts._policyalign import POLICY_RULE_ID
from services.alerts._tracker import TrackedIncident
from services.alerts.escalation import EscalationManager
from services.alerts.hotstate import HotState, InProcessHotState, RedisHotState
from services.alerts.memstore import InMemoryAlertStore
from services.alerts.models import (
    CONDITION_TYPES,
    POLICY_SEVERITY,
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    EscalationLevel,
    EscalationPolicy,
    SLAViolation,
    validate_escalation_policy,
    validate_rule,
)
from services.alerts.monitor import SLAMonitorService
from services.alerts.notify import ChannelSender, Notifier
from services.alerts.outbox import OutboxPublisher
from services.alerts.postgres import PostgresAlertStore
from services.alerts.store import AlertStore, Change, StaleTransitionError
from services.alerts.suppression import AlertSuppressionManager

__all__ = [
    "CONDITION_TYPES",
    "POLICY_RULE_ID",
    "POLICY_SEVERITY",
    "TRANSITIONS",
    "Alert",
    "AlertRule",
    "AlertSeverity",
    "AlertStatus",
    "AlertStore",
    "AlertSuppressionManager",
    "Change",
    "ChannelSender",
    "EscalationLevel",
    "EscalationManager",
    "EscalationPolicy",
    "HotState",
    "IllegalTransitionError",
    "InMemoryAlertStore",
    "InProcessHotState",
    "Notifier",
    "OutboxPublisher",
    "PostgresAlertStore",
    "RedisHotState",
    "SLAMonitorService",
    "SLAViolation",
    "StaleTransitionError",
    "TrackedIncident",
    "validate_escalation_policy",
    "validate_rule",
]

"""IonVeil's domain core: pure, synchronous rules shared by every service and worker."""

from ionveil.errors import (
    ConfigurationError,
    ConflictError,
    IonVeilError,
    NotFoundError,
    TransientError,
    ValidationError,
)
from ionveil.models import SLA_BY_SEVERITY, Severity, validate_dispatch_order
from ionveil.policy import PolicyEngine, PolicyTransition

__all__ = [
    "SLA_BY_SEVERITY",
    "ConfigurationError",
    "ConflictError",
    "IonVeilError",
    "NotFoundError",
    "PolicyEngine",
    "PolicyTransition",
    "Severity",
    "TransientError",
    "ValidationError",
    "validate_dispatch_order",
]

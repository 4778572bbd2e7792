"""The one table of legal alert state changes.

An alert is born ``open`` (or ``suppressed`` when a suppression matches its rule). From there:

========== ====================================== ============
action     allowed from                           leads to
========== ====================================== ============
acknowledge open, escalated                       acknowledged
escalate   open, acknowledged, escalated          escalated
resolve    open, acknowledged, escalated,         resolved
           suppressed
update     open, acknowledged, escalated,         (unchanged)
           suppressed
========== ====================================== ============

``resolved`` is terminal. ``update`` changes severity or details without a status change (an
org's policy moving from watch to restricted raises the severity of its open policy alert).
Anything else raises ``IllegalTransitionError``: a ``ValueError`` as the contract requires, and
an ``ionveil.errors.ConflictError`` so the API answers 409.
"""

from __future__ import annotations

from ionveil.errors import ConflictError
from services.alerts.models import AlertStatus

__all__ = ["ACTIONS", "TRANSITIONS", "IllegalTransitionError", "next_status"]

_ACTIVE = frozenset(
    {AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.ESCALATED, AlertStatus.SUPPRESSED}
)

TRANSITIONS: dict[str, tuple[frozenset[AlertStatus], AlertStatus | None]] = {
    "acknowledge": (frozenset({AlertStatus.OPEN, AlertStatus.ESCALATED}), AlertStatus.ACKNOWLEDGED),
    "escalate": (
        frozenset({AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.ESCALATED}),
        AlertStatus.ESCALATED,
    ),
    "resolve": (_ACTIVE, AlertStatus.RESOLVED),
    "update": (_ACTIVE, None),
}
"""action -> (statuses it may start from, status it leads to; None keeps the status)."""

ACTIONS: tuple[str, ...] = tuple(TRANSITIONS)


class IllegalTransitionError(ConflictError, ValueError):
    """The alert's current status does not allow the action (e.g. acknowledging a resolved one)."""


def next_status(current: AlertStatus, action: str) -> AlertStatus:
    """The status ``action`` leads to from ``current``.

    Raises:
        IllegalTransitionError: the move is not in the table.
        KeyError: ``action`` is not an action at all (a programming error).
    """
    sources, target = TRANSITIONS[action]
    if current not in sources:
        raise IllegalTransitionError(f"cannot {action} an alert that is {current.value}")
    return current if target is None else target

"""The registry of IonVeil services: id, HTTP port, health path, description, dependencies.

``topological_order()`` gives the order to start them in (dependencies first) and refuses a
registry with a cycle or a dependency on an unknown service, so a bad edit fails loudly in CI
instead of at three in the morning. Ports are unique; the three new services hold 8110-8112.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

__all__ = ["SERVICE_CONTRACTS", "ContractError", "ServiceContract", "topological_order"]


class ServiceContract(TypedDict):
    """One service's registration."""

    id: str
    port: int
    health: str
    description: str
    deps: list[str]


class ContractError(ValueError):
    """The registry is inconsistent: a cycle, an unknown dependency or a reused port."""


SERVICE_CONTRACTS: dict[str, ServiceContract] = {
    "policy": {
        "id": "policy",
        "port": 8101,
        "health": "/health",
        "description": "Live per-org escalation policy engine",
        "deps": [],
    },
    "dispatch": {
        "id": "dispatch",
        "port": 8102,
        "health": "/health",
        "description": "Dispatch rules: unit ranking, incident ordering, capacity",
        "deps": ["policy"],
    },
    "analytics": {
        "id": "analytics",
        "port": 8103,
        "health": "/health",
        "description": "Response-time metrics collection and statistics",
        "deps": [],
    },
    "compliance": {
        "id": "compliance",
        "port": 8104,
        "health": "/health",
        "description": "SLA targets, remaining time and compliance rates",
        "deps": ["analytics"],
    },
    "notifications": {
        "id": "notifications",
        "port": 8105,
        "health": "/health",
        "description": "Notification channels: webhook, email, NATS subject",
        "deps": [],
    },
    "audit": {
        "id": "audit",
        "port": 8106,
        "health": "/health",
        "description": "Append-only, hash-chained audit trail",
        "deps": [],
    },
    "simulator": {
        "id": "simulator",
        "port": 8110,
        "health": "/health",
        "description": "Policy simulation and testing service",
        "deps": ["policy"],
    },
    "dashboard": {
        "id": "dashboard",
        "port": 8111,
        "health": "/health",
        "description": "Real-time dispatch analytics dashboard backend",
        "deps": ["analytics", "dispatch"],
    },
    "alerts": {
        "id": "alerts",
        "port": 8112,
        "health": "/health",
        "description": "SLA monitoring and alerting service",
        "deps": ["policy", "notifications", "audit"],
    },
}


def topological_order(contracts: Mapping[str, ServiceContract] | None = None) -> list[str]:
    """Service ids with every dependency before its dependents (ties in alphabetical order).

    Args:
        contracts: The registry to order; ``SERVICE_CONTRACTS`` by default.

    Raises:
        ContractError: an unknown dependency, a reused port, or a dependency cycle (named).
    """
    registry = SERVICE_CONTRACTS if contracts is None else contracts
    ports: dict[int, str] = {}
    for sid, contract in registry.items():
        other = ports.setdefault(contract["port"], sid)
        if other != sid:
            raise ContractError(f"port {contract['port']} is used by both {other!r} and {sid!r}")
        for dep in contract["deps"]:
            if dep not in registry:
                raise ContractError(f"service {sid!r} depends on unknown service {dep!r}")
    remaining = {sid: set(c["deps"]) for sid, c in registry.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(sid for sid, deps in remaining.items() if not deps)
        if not ready:
            raise ContractError(f"dependency cycle among {sorted(remaining)}")
        for sid in ready:
            order.append(sid)
            del remaining[sid]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order

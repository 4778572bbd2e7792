"""SERVICE_CONTRACTS and topological_order(): the registry of services and their start order."""

from __future__ import annotations

import copy

import pytest

from shared.contracts import SERVICE_CONTRACTS, ContractError, ServiceContract, topological_order


def contract(sid: str, port: int, deps: list[str]) -> ServiceContract:
    return {"id": sid, "port": port, "health": "/health", "description": sid, "deps": deps}


def test_every_service_is_registered_with_a_complete_contract() -> None:
    """All nine services are present, each with id matching its key, /health and a description."""
    assert set(SERVICE_CONTRACTS) == {
        "policy", "dispatch", "analytics", "compliance", "notifications", "audit",
        "simulator", "dashboard", "alerts",
    }  # fmt: skip
    for sid, c in SERVICE_CONTRACTS.items():
        assert set(c) == {"id", "port", "health", "description", "deps"}
        assert c["id"] == sid and c["health"] == "/health" and c["description"]
        assert isinstance(c["port"], int) and 1024 < c["port"] < 65536


@pytest.mark.parametrize(
    ("sid", "port", "deps"),
    [
        ("simulator", 8110, ["policy"]),
        ("dashboard", 8111, ["analytics", "dispatch"]),
        ("alerts", 8112, ["policy", "notifications", "audit"]),
    ],
)
def test_seeded_services_have_the_seed_contracts(sid: str, port: int, deps: list[str]) -> None:
    """The three new services hold the ports and dependencies the seeds give them."""
    assert SERVICE_CONTRACTS[sid]["port"] == port
    assert SERVICE_CONTRACTS[sid]["deps"] == deps


def test_ports_are_unique() -> None:
    """No two services share a port."""
    ports = [c["port"] for c in SERVICE_CONTRACTS.values()]
    assert len(ports) == len(set(ports))


def test_topological_order_puts_dependencies_first() -> None:
    """Every service comes after all of its dependencies, and each appears exactly once."""
    order = topological_order()
    assert sorted(order) == sorted(SERVICE_CONTRACTS)
    position = {sid: i for i, sid in enumerate(order)}
    for sid, c in SERVICE_CONTRACTS.items():
        for dep in c["deps"]:
            assert position[dep] < position[sid], (dep, sid)


def test_topological_order_is_deterministic() -> None:
    """Ties are broken alphabetically, level by level, so the order never changes by itself."""
    registry = {
        "b": contract("b", 1, []),
        "a": contract("a", 2, []),
        "d": contract("d", 3, ["a", "b"]),
        "c": contract("c", 4, ["a"]),
    }
    assert topological_order(registry) == ["a", "b", "c", "d"]
    assert topological_order({}) == []


@pytest.mark.parametrize(
    ("registry", "named"),
    [
        ({"a": contract("a", 1, ["a"])}, "['a']"),
        ({"a": contract("a", 1, ["b"]), "b": contract("b", 2, ["a"])}, "['a', 'b']"),
        (
            {
                "a": contract("a", 1, []),
                "x": contract("x", 2, ["z", "a"]),
                "y": contract("y", 3, ["x"]),
                "z": contract("z", 4, ["y"]),
            },
            "['x', 'y', 'z']",
        ),
    ],
    ids=["self", "pair", "triangle-behind-a-root"],
)
def test_cycles_are_refused_naming_the_services(
    registry: dict[str, ServiceContract], named: str
) -> None:
    """A dependency cycle raises ContractError (a ValueError) naming the services caught in it."""
    with pytest.raises(ContractError, match="dependency cycle among") as info:
        topological_order(registry)
    assert str(info.value).endswith(named)
    assert isinstance(info.value, ValueError)


def test_unknown_dependency_is_refused() -> None:
    """A dependency on a service that is not registered is named in the error."""
    registry = copy.deepcopy(SERVICE_CONTRACTS)
    registry["alerts"]["deps"].append("pager")
    with pytest.raises(ContractError, match="'alerts' depends on unknown service 'pager'"):
        topological_order(registry)


def test_reused_port_is_refused() -> None:
    """Two services on one port are named in the error."""
    registry = copy.deepcopy(SERVICE_CONTRACTS)
    registry["dashboard"]["port"] = SERVICE_CONTRACTS["simulator"]["port"]
    with pytest.raises(
        ContractError, match="port 8110 is used by both 'simulator' and 'dashboard'"
    ):
        topological_order(registry)

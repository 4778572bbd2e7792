"""Service contracts: who runs where and depends on whom."""

from shared.contracts.contracts import (
    SERVICE_CONTRACTS,
    ContractError,
    ServiceContract,
    topological_order,
)

__all__ = ["SERVICE_CONTRACTS", "ContractError", "ServiceContract", "topological_order"]

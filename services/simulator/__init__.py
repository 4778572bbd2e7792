"""IonVeil Policy Simulator Service: what-if runs of the real ``PolicyEngine``.

The contract (seed Task 1) lives in :mod:`services.simulator.engine`; generators, replay of
recorded history, the candidate sweep, plain-data forms and the PostgreSQL store sit beside it.
"""

from services.simulator._recommend import Priorities
from services.simulator.engine import (
    FailurePattern,
    FailurePatternGenerator,
    PolicyScenario,
    PolicySimulator,
    ScenarioBuilder,
    SimulationResult,
    SimulationStatus,
    pattern_span_seconds,
    validate_duration,
    validate_pattern,
    validate_scenario,
)
from services.simulator.sweep import sweep_scenarios

__all__ = [
    "FailurePattern",
    "FailurePatternGenerator",
    "PolicyScenario",
    "PolicySimulator",
    "Priorities",
    "ScenarioBuilder",
    "SimulationResult",
    "SimulationStatus",
    "pattern_span_seconds",
    "sweep_scenarios",
    "validate_duration",
    "validate_pattern",
    "validate_scenario",
]

#!/usr/bin/env python3
"""Simulator benchmark: ``python bench/simulator.py [--quick]``; writes
``bench/results/simulator.md``.

1. Events per second through the real ``PolicyEngine`` (``PolicySimulator.run_simulation``:
   chunked ``record_many`` and every result figure) for a
   1,000,000-event pattern (200,000 with ``--quick``), timing ``run_simulation``;
   ``create_simulation`` (validating every event, once per pattern) is timed and reported
   beside it. Target: >= 1,000,000 events/s.
2. The same events in an equivalent discrete-event simulation written with SimPy: one process
   per event source (8 sources, each owning the offsets ``offset % 8``), every event a
   scheduled timeout (zero delay within an instant) applying the same escalation rule to a
   shared ladder; it makes exactly the engine's transitions (checked). Target: >= 5x SimPy.
3. A recommendation sweep: 100 candidates (10 escalation thresholds x 10 de-escalation scales)
   over three 100,000-event patterns (constant, bursts, cascade; 20,000 with ``--quick``),
   ``compare_scenarios`` on a process pool over both cores, then ``generate_recommendation``.
   Target: < 30 s.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simpy  # noqa: E402
import structlog  # noqa: E402

from services.simulator import (  # noqa: E402
    FailurePattern,
    FailurePatternGenerator,
    PolicyScenario,
    PolicySimulator,
    sweep_scenarios,
)

ORDER = ["normal", "watch", "restricted", "halted"]
DEESC = {"watch": 10, "restricted": 20, "halted": 30}


def engine_rate(pattern: FailurePattern, repeats: int = 3) -> tuple[float, int, float]:
    """Best events/s of ``run_simulation`` over ``repeats`` runs, the transitions of one run,
    and the best seconds of ``create_simulation`` (input validation, once per pattern).

    SimPy's model gets its events ready-made, so the like-for-like figure is the run; the
    validation cost is reported beside it rather than hidden.
    """
    scenario = PolicyScenario("bench", ORDER, 3, DEESC)
    best, transitions, create_best = 0.0, 0, float("inf")
    for _ in range(repeats):
        sim = PolicySimulator()
        started = time.perf_counter()
        simulation_id = sim.create_simulation(scenario, pattern, pattern.events[-1][0] + 1)
        created = time.perf_counter()
        result = sim.run_simulation(simulation_id)
        elapsed = time.perf_counter() - created
        create_best = min(create_best, created - started)
        best = max(best, len(pattern.events) / elapsed)
        transitions = len(result.policy_transitions)
    return best, transitions, create_best


def simpy_rate(pattern: FailurePattern, sources: int = 8) -> tuple[float, int]:
    """Events/s of the SimPy model of the same rule, and its transition count."""
    state = {"index": 0, "burst": 0, "streak": 0, "transitions": 0}
    deesc = [0] + [DEESC[p] for p in ORDER[1:]]
    top = len(ORDER) - 1

    def source(env: simpy.Environment, events: list[tuple[int, bool]]):
        for offset, ok in events:
            yield env.timeout(offset - env.now)  # every event is a scheduled DES event
            if ok:
                state["streak"] += 1
                state["burst"] = 0
                i = state["index"]
                if i and state["streak"] >= deesc[i]:
                    state["index"] -= 1
                    state["streak"] = 0
                    state["transitions"] += 1
            else:
                state["burst"] += 1
                state["streak"] = 0
                if state["burst"] >= 3 and state["index"] < top:
                    state["index"] += 1
                    state["burst"] = 0
                    state["transitions"] += 1

    # Sources own whole offsets (offset % sources), so events at one instant keep the
    # pattern's order and the model makes exactly the engine's transitions.
    dealt: list[list[tuple[int, bool]]] = [[] for _ in range(sources)]
    for event in pattern.events:
        dealt[event[0] % sources].append(event)
    env = simpy.Environment()
    started = time.perf_counter()
    for events in dealt:
        env.process(source(env, events))
    env.run()
    elapsed = time.perf_counter() - started
    return len(pattern.events) / elapsed, state["transitions"]


def sweep(events: int) -> tuple[float, dict, int]:
    """Seconds for the 100-candidate sweep over three patterns, the recommendation, results."""
    gen = FailurePatternGenerator
    patterns = [
        gen.constant_failure_rate(0.15, events, seed=1),
        gen.burst_failure(6, 600, events, seed=2),
        gen.cascading_failure(0.01, 1.3, events // 2, events, seed=3),
    ]
    base = PolicyScenario("base", ORDER, 3, DEESC)
    candidates = sweep_scenarios(
        base, list(range(1, 11)), [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0]
    )
    assert len(candidates) == 100, len(candidates)
    sim = PolicySimulator(parallel_min_events=1)
    started = time.perf_counter()
    results = []
    for pattern in patterns:
        results.extend(sim.compare_scenarios(candidates, pattern).values())
    rec = sim.generate_recommendation(results)
    return time.perf_counter() - started, rec, len(results)


def main(argv: list[str]) -> int:
    """Run the three measurements, print them and write the results file."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    quick = "--quick" in argv
    n_events = 200_000 if quick else 1_000_000
    n_sweep = 20_000 if quick else 100_000
    pattern = FailurePatternGenerator.constant_failure_rate(0.2, n_events // 10, 10.0, seed=7)
    rate, transitions, create_s = engine_rate(pattern)
    s_rate, s_transitions = simpy_rate(pattern)
    ratio = rate / s_rate
    print(f"engine : {rate:,.0f} events/s ({n_events:,} events, {transitions} transitions)")
    print(f"create : {create_s:.3f} s validating the {n_events:,}-event pattern (once per pattern)")
    print(f"SimPy  : {s_rate:,.0f} events/s ({s_transitions} transitions)")
    print(f"ratio  : {ratio:.1f}x")
    seconds, rec, n_results = sweep(n_sweep)
    print(f"sweep  : 100 candidates x 3 patterns x {n_sweep:,} events in {seconds:.1f} s")
    print(f"         recommended {rec['recommended']['scenario']}")
    verdict = {
        "events/s >= 1,000,000": rate >= 1_000_000,
        ">= 5x SimPy": ratio >= 5,
        "same transitions as SimPy": transitions == s_transitions,
        "sweep < 30 s": seconds < 30,
    }
    lines = [
        "# Simulator benchmark",
        "",
        f"`python bench/simulator.py{' --quick' if quick else ''}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SimPy {simpy.__version__}.",
        "",
        "| measurement | value | target | met |",
        "| --- | --- | --- | --- |",
        f"| real engine, {n_events:,}-event pattern (run) | {rate:,.0f} events/s | "
        f">= 1,000,000 | {verdict['events/s >= 1,000,000']} |",
        f"| create_simulation: validating the same pattern (once per pattern) | "
        f"{create_s:.3f} s | | |",
        f"| SimPy model of the same rule, same events (8 source processes) | {s_rate:,.0f} "
        f"events/s | | |",
        f"| ratio | {ratio:.1f}x | >= 5x | {verdict['>= 5x SimPy']} |",
        f"| sweep: 100 candidates x 3 patterns x {n_sweep:,} events + recommendation "
        f"({n_results} runs) | {seconds:.1f} s | < 30 s | {verdict['sweep < 30 s']} |",
        "",
        f"Transitions: engine {transitions}, SimPy {s_transitions} (must be equal).",
        f"Recommended in the sweep: `{rec['recommended']['scenario']}`.",
        "",
    ]
    out = ROOT / "bench" / "results" / "simulator.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

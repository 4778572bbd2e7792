#!/usr/bin/env python3
"""Simulator benchmark: ``python bench/simulator.py [--quick]``; writes
``bench/results/simulator.md``.

1. Events per second through the real ``PolicyEngine`` (``PolicySimulator.create_simulation``
   + ``run_simulation``: validation, chunked ``record_many``, all result figures) for a
   1,000,000-event pattern (200,000 with ``--quick``). Target: >= 1,000,000 events/s.
2. The same events in an equivalent discrete-event simulation written with SimPy: one process
   per event source (the pattern dealt round-robin to 8 sources), each yielding a timeout to
   its next event and applying the same escalation rule to a shared ladder. Target: the
   simulator >= 5x SimPy.
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


def engine_rate(pattern: FailurePattern, repeats: int = 3) -> tuple[float, int]:
    """Best events/s of create+run over ``repeats`` runs, and the transitions of one run."""
    scenario = PolicyScenario("bench", ORDER, 3, DEESC)
    best, transitions = 0.0, 0
    for _ in range(repeats):
        sim = PolicySimulator()
        started = time.perf_counter()
        result = sim.run_simulation(
            sim.create_simulation(scenario, pattern, pattern.events[-1][0] + 1)
        )
        elapsed = time.perf_counter() - started
        best = max(best, len(pattern.events) / elapsed)
        transitions = len(result.policy_transitions)
    return best, transitions


def simpy_rate(pattern: FailurePattern, sources: int = 8) -> tuple[float, int]:
    """Events/s of the SimPy model of the same rule, and its transition count."""
    state = {"index": 0, "burst": 0, "streak": 0, "transitions": 0}
    deesc = [0] + [DEESC[p] for p in ORDER[1:]]
    top = len(ORDER) - 1

    def source(env: simpy.Environment, events: list[tuple[int, bool]]):
        for offset, ok in events:
            if offset > env.now:
                yield env.timeout(offset - env.now)
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

    env = simpy.Environment()
    started = time.perf_counter()
    for k in range(sources):
        env.process(source(env, pattern.events[k::sources]))
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
    rate, transitions = engine_rate(pattern)
    s_rate, s_transitions = simpy_rate(pattern)
    ratio = rate / s_rate
    print(f"engine : {rate:,.0f} events/s ({n_events:,} events, {transitions} transitions)")
    print(f"SimPy  : {s_rate:,.0f} events/s ({s_transitions} transitions)")
    print(f"ratio  : {ratio:.1f}x")
    seconds, rec, n_results = sweep(n_sweep)
    print(f"sweep  : 100 candidates x 3 patterns x {n_sweep:,} events in {seconds:.1f} s")
    print(f"         recommended {rec['recommended']['scenario']}")
    verdict = {
        "events/s >= 1,000,000": rate >= 1_000_000,
        ">= 5x SimPy": ratio >= 5,
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
        f"| real engine, {n_events:,}-event pattern (create + run) | {rate:,.0f} events/s | "
        f">= 1,000,000 | {verdict['events/s >= 1,000,000']} |",
        f"| SimPy model of the same rule, same events (8 source processes) | {s_rate:,.0f} "
        f"events/s | | |",
        f"| ratio | {ratio:.1f}x | >= 5x | {verdict['>= 5x SimPy']} |",
        f"| sweep: 100 candidates x 3 patterns x {n_sweep:,} events + recommendation "
        f"({n_results} runs) | {seconds:.1f} s | < 30 s | {verdict['sweep < 30 s']} |",
        "",
        f"Transitions: engine {transitions}, SimPy {s_transitions} (SimPy orders events of equal "
        "offset by source, so counts may differ slightly).",
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

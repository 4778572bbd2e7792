"""``ionveil simulate``: try a policy on a failure pattern before deploying it.

    ionveil simulate --order normal,watch,halted --escalation-threshold 3 \\
        --deescalate watch=10 --deescalate halted=30 --pattern burst --burst-size 5 \\
        --burst-interval 300 --duration 86400
    ionveil simulate --scenario s.yaml --replay org-1 2026-03-03T00:00Z 2026-03-04T00:00Z
    ionveil simulate --compare a.yaml b.yaml --pattern cascade --initial-rate 0.02
    ionveil simulate --scenario s.yaml --recommend --thresholds 2,3,5 --scales 0.5,1,2

Runs in this process (no NATS needed) unless ``--remote``, which asks a running simulator
worker over ``ionveil.api.simulator.*``. A scenario YAML file holds ``name, policy_order,
escalation_threshold, deescalation_thresholds`` (and optional ``metadata``).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import yaml

from ionveil.errors import ValidationError
from ionveil.policy import DEFAULT_DEESCALATION_THRESHOLDS, DEFAULT_POLICY_ORDER
from services.simulator import (
    FailurePattern,
    PolicyScenario,
    PolicySimulator,
    pattern_span_seconds,
    sweep_scenarios,
    validate_scenario,
)
from services.simulator.serde import pattern_from_spec, result_to_dict, scenario_from_dict
from workers.codec import decode_payload, encode_payload, parse_timestamp
from workers.commands._common import add_common_options, connect, resolve_settings
from workers.commands._simulate_render import (
    ProgressBar,
    render_comparison,
    render_recommendation,
    render_result,
)
from workers.runtime import configure_logging

__all__ = ["build_pattern_spec", "load_scenario", "register", "scenario_from_flags"]


def load_scenario(path: str) -> PolicyScenario:
    """A scenario from a YAML file (validated).

    Raises:
        ValidationError: unreadable file, bad YAML or an invalid scenario.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError(f"--scenario {path}: {exc}") from exc
    if isinstance(data, dict):
        data.setdefault("name", Path(path).stem)
    scenario = scenario_from_dict(data, field=path)
    problems = validate_scenario(scenario)
    if problems:
        raise ValidationError([f"{path}: {p}" for p in problems])
    return scenario


def _parse_deescalate(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        policy, _, value = item.partition("=")
        try:
            out[policy.strip()] = int(value)
        except ValueError:
            raise ValidationError(f"--deescalate: expected POLICY=N, got {item!r}") from None
    return out


def scenario_from_flags(args: argparse.Namespace) -> PolicyScenario:
    """The scenario of ``--order``, ``--escalation-threshold`` and ``--deescalate`` (validated)."""
    order = [p.strip() for p in args.order.split(",")] if args.order else list(DEFAULT_POLICY_ORDER)
    deesc = (
        _parse_deescalate(args.deescalate)
        if args.deescalate
        else {k: v for k, v in DEFAULT_DEESCALATION_THRESHOLDS.items() if k in order}
    )
    scenario = PolicyScenario(args.name, order, args.escalation_threshold, deesc)
    problems = validate_scenario(scenario)
    if problems:
        raise ValidationError(problems)
    return scenario


def build_pattern_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The generator spec of ``--pattern`` and its parameters."""
    common = {"duration_seconds": args.duration, "seed": args.seed}
    if args.pattern == "constant":
        params = {"rate": args.rate, "events_per_second": args.events_per_second, **common}
    elif args.pattern == "burst":
        params = {
            "burst_size": args.burst_size,
            "burst_interval_seconds": args.burst_interval,
            **common,
        }
    else:
        params = {
            "initial_rate": args.initial_rate,
            "escalation_factor": args.factor,
            "recovery_after_seconds": args.recovery_after,
            "events_per_second": args.events_per_second,
            **common,
        }
    return {"generator": args.pattern, "params": params}


async def _replay(args: argparse.Namespace) -> tuple[FailurePattern, int]:
    import asyncpg

    from services.simulator.replay import pattern_from_history, replay_duration_seconds

    org, start_s, end_s = args.replay
    start = parse_timestamp(start_s, field="--replay FROM")
    end = parse_timestamp(end_s, field="--replay TO")
    settings = resolve_settings(args)
    if not settings.analytics_dsn:
        raise ValidationError("--replay: IONVEIL_ANALYTICS_DSN is not set (and no fleet runs)")
    pool = await asyncpg.create_pool(settings.analytics_dsn, min_size=1, max_size=2)
    try:
        pattern = await pattern_from_history(pool, org, start, end)
    finally:
        await pool.close()
    return pattern, replay_duration_seconds(start, end)


def _scenarios(args: argparse.Namespace) -> list[PolicyScenario]:
    if args.compare:
        return [load_scenario(p) for p in args.compare]
    return [load_scenario(args.scenario) if args.scenario else scenario_from_flags(args)]


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",")] if text else None


def _floats(text: str | None) -> list[float] | None:
    return [float(x) for x in text.split(",")] if text else None


def _local(args: argparse.Namespace, pattern: FailurePattern, duration: int) -> str:
    scenarios = _scenarios(args)
    sim = PolicySimulator()
    if args.recommend:
        candidates = (
            scenarios
            if len(scenarios) > 1
            else sweep_scenarios(scenarios[0], _ints(args.thresholds), _floats(args.scales))
        )
        results = sim.compare_scenarios(candidates, pattern, duration_seconds=duration)
        return render_recommendation(sim.generate_recommendation(list(results.values())))
    if len(scenarios) > 1:
        results = sim.compare_scenarios(scenarios, pattern, duration_seconds=duration)
        return render_comparison({n: result_to_dict(r) for n, r in results.items()})
    sim_id = sim.create_simulation(scenarios[0], pattern, duration)
    progress = ProgressBar() if len(pattern.events) >= args.progress_min_events else None
    return render_result(result_to_dict(sim.run_simulation(sim_id, progress=progress)))


async def _remote(args: argparse.Namespace, pattern_spec: dict[str, Any], duration: int) -> str:
    from services.simulator.serde import scenario_to_dict

    settings = resolve_settings(args)
    nc = await connect(settings, "ionveil-simulate")
    scenarios = [scenario_to_dict(s) for s in _scenarios(args)]

    async def call(op: str, payload: dict[str, Any]) -> Any:
        reply = await nc.request(
            f"ionveil.api.simulator.{op}", encode_payload(payload), timeout=args.timeout
        )
        value, _ = decode_payload(reply.data, reply.headers)
        if isinstance(value, dict) and "error" in value:
            raise ValidationError(f"simulator: {value['error']['message']}")
        return value

    try:
        common = {"pattern": pattern_spec, "duration": duration}
        if args.recommend:
            if len(scenarios) > 1:
                rec = await call("recommend", {"scenarios": scenarios, **common})
            else:
                rec = await call(
                    "recommend",
                    {
                        "base": scenarios[0],
                        "escalation_thresholds": _ints(args.thresholds),
                        "deescalation_scales": _floats(args.scales),
                        **common,
                    },
                )
            return render_recommendation(rec)
        if len(scenarios) > 1:
            compared = await call("compare", {"scenarios": scenarios, **common})
            return render_comparison(compared["results"])
        return render_result(await call("run", {"scenario": scenarios[0], **common}))
    finally:
        await nc.drain()


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or "warning", "console")  # the output is the report
    if args.replay:
        pattern, duration = asyncio.run(_replay(args))
        spec: dict[str, Any] = {
            "pattern_id": pattern.pattern_id,
            "events": [list(e) for e in pattern.events],
        }
    else:
        spec = build_pattern_spec(args)
        pattern = pattern_from_spec(spec)
        duration = args.duration
    if args.remote:
        print(asyncio.run(_remote(args, spec, duration)))
    else:
        print(_local(args, pattern, duration or pattern_span_seconds(pattern)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate``."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a policy on a failure pattern (in-process, or --remote)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(p)
    s = p.add_argument_group("scenario (a YAML file, or flags)")
    s.add_argument("--scenario", help="scenario YAML file")
    s.add_argument("--name", default="cli", help="scenario name for the flag form")
    s.add_argument("--order", help="policy order, comma-separated (default: the engine's)")
    s.add_argument("--escalation-threshold", type=int, default=3)
    s.add_argument(
        "--deescalate",
        action="append",
        metavar="POLICY=N",
        default=[],
        help="de-escalation streak for a policy (repeatable)",
    )
    s.add_argument("--compare", nargs="+", metavar="YAML", help="compare scenario files")
    s.add_argument(
        "--recommend",
        action="store_true",
        help="sweep around the scenario (or rank --compare files) and recommend",
    )
    s.add_argument("--thresholds", help="sweep: escalation thresholds, e.g. 1,2,3,5")
    s.add_argument("--scales", help="sweep: de-escalation scales, e.g. 0.5,1,2")
    g = p.add_argument_group("pattern (a generator, or --replay)")
    g.add_argument("--pattern", choices=["constant", "burst", "cascade"], default="constant")
    g.add_argument("--duration", type=int, default=3600, help="seconds (default 3600)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--rate", type=float, default=0.1, help="constant: failure rate")
    g.add_argument("--events-per-second", type=float, default=1.0)
    g.add_argument("--burst-size", type=int, default=5)
    g.add_argument("--burst-interval", type=int, default=300, help="burst: seconds")
    g.add_argument("--initial-rate", type=float, default=0.02, help="cascade")
    g.add_argument("--factor", type=float, default=1.5, help="cascade: growth per minute")
    g.add_argument("--recovery-after", type=int, default=1800, help="cascade: seconds")
    g.add_argument(
        "--replay",
        nargs=3,
        metavar=("ORG", "FROM", "TO"),
        help="replay an org's recorded outcomes (analytics database)",
    )
    p.add_argument("--remote", action="store_true", help="ask a running simulator worker")
    p.add_argument("--timeout", type=float, default=300.0, help="--remote: seconds")
    p.add_argument("--progress-min-events", type=int, default=200_000, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)

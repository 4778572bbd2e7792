"""``ionveil demo``: publish realistic incident and dispatch traffic for a few orgs.

Each incident goes opened -> dispatched -> arrived -> closed, and its arrival publishes a
dispatch event; ``--miss-org`` makes one org miss most SLAs, so its live policy escalates
(watch with ``ionveil tail 'ionveil.policy.transitions.>'``). A progress line is kept on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

import nats.errors
import nats.js.errors

from ionveil.errors import ValidationError
from workers.commands._common import add_common_options, connect, resolve_settings
from workers.commands._signals import stop_on_signals
from workers.demo import DEFAULT_ORGS, DemoConfig, DemoProgress, DemoTraffic, publish_demo
from workers.settings import Settings

__all__ = ["register"]


def _progress(progress: DemoProgress) -> None:
    sys.stderr.write("\r\033[K" + progress.line())
    sys.stderr.flush()


async def _demo(args: argparse.Namespace, config: DemoConfig, settings: Settings) -> int:
    with stop_on_signals() as stop:
        nc = await connect(settings, "ionveil-demo")
        try:
            progress = await publish_demo(
                nc.jetstream(),
                DemoTraffic(config),
                rate=args.rate,
                duration_s=args.duration,
                on_progress=_progress,
                stop=stop,
            )
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            sys.stderr.write(
                "\nno stream takes ionveil.dispatch.events / ionveil.incidents: start the "
                "fleet first (ionveil up)\n"
            )
            return 1
        finally:
            await nc.drain()
    sys.stderr.write("\n")
    print(
        f"done: {progress.incidents} incidents, {progress.dispatch_events} dispatch events, "
        f"{progress.incident_updates} incident updates (seed {config.seed})",
        flush=True,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise ValidationError("--rate: must be positive")
    if args.duration is not None and args.duration <= 0:
        raise ValidationError("--duration: must be positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    config = DemoConfig(
        orgs=tuple(args.orgs),
        miss_org=args.miss_org,
        miss_rate=args.miss_rate,
        seed=seed,
    )
    settings = resolve_settings(args)
    return asyncio.run(_demo(args, config, settings))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    parser = subparsers.add_parser("demo", help="publish demo traffic", description=__doc__)
    parser.add_argument(
        "--orgs",
        type=lambda s: [o.strip() for o in s.split(",") if o.strip()],
        default=list(DEFAULT_ORGS),
        help="comma-separated orgs (default: %(default)s)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="new incidents per second")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument("--miss-org", help="an org whose SLA misses pile up")
    parser.add_argument(
        "--miss-rate", type=float, default=0.05, help="share of SLA misses of other orgs"
    )
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    add_common_options(parser)
    parser.set_defaults(func=_run)

"""``ionveil worker NAME``: one worker in this process (run several for replicas).

NATS and the databases come from ``IONVEIL_*`` variables, or from a running ``ionveil up`` in
the same data directory. SIGINT/SIGTERM drains it.
"""

from __future__ import annotations

import argparse
import asyncio

from workers.commands._common import add_common_options, resolve_settings
from workers.commands._signals import stop_on_signals
from workers.fleet import WORKERS, http_port, load_worker
from workers.runtime import run_worker
from workers.settings import Settings

__all__ = ["register"]


async def _serve(name: str, settings: Settings, port: int) -> int:
    cls = load_worker(name)
    with stop_on_signals() as stop:
        async with run_worker(cls(), settings, http_port=port) as handle:
            print(
                f"{name} running: http://127.0.0.1:{handle.http_port}/health "
                f"(replica {handle.ctx.replica_id})",
                flush=True,
            )
            await stop.wait()
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    port = args.http_port if args.http_port is not None else http_port(args.name, settings)
    return asyncio.run(_serve(args.name, settings, port))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``worker``."""
    parser = subparsers.add_parser("worker", help="run one worker", description=__doc__)
    parser.add_argument("name", choices=sorted(WORKERS), help="which worker")
    parser.add_argument(
        "--http-port", type=int, help="HTTP port (default: contract port + offset; 0 = free)"
    )
    add_common_options(parser)
    parser.set_defaults(func=_run)

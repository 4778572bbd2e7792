"""The ``ionveil`` command: ``up``, ``worker``, ``contracts``, ``demo``, ``tail`` and whatever
else ``workers/commands/`` holds (each subcommand is a module there)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ionveil.errors import ConfigurationError, ValidationError
from workers.commands import command_modules

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ionveil", description="IonVeil: dispatch policy and analytics fleet on NATS."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; returns the exit status (2 for a usage or configuration error)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigurationError, ValidationError) as exc:
        print(f"ionveil {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover - `python -m workers.cli`
    sys.exit(main())

"""``ionveil contracts``: the services in start order, with ports and dependencies."""

from __future__ import annotations

import argparse
import json

from shared.contracts.contracts import SERVICE_CONTRACTS, topological_order

__all__ = ["register", "render"]


def render(as_json: bool = False) -> str:
    """The table (or JSON list) of services in topological order."""
    order = topological_order()
    if as_json:
        return json.dumps([SERVICE_CONTRACTS[sid] for sid in order], indent=2)
    rows = [("#", "service", "port", "health", "depends on", "description")]
    for index, sid in enumerate(order, 1):
        c = SERVICE_CONTRACTS[sid]
        deps = ", ".join(c["deps"]) or "-"
        rows.append((str(index), sid, str(c["port"]), c["health"], deps, c["description"]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
        for row in rows
    )


def _run(args: argparse.Namespace) -> int:
    print(render(args.json))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``contracts``."""
    parser = subparsers.add_parser(
        "contracts", help="services in start order with ports", description=__doc__
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_run)

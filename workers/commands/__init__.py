"""The ``ionveil`` subcommands, one module each.

A module here that defines ``register(subparsers)`` is a subcommand: it adds its parser and sets
``func`` (``(args) -> int``, the exit status) as a default. ``ionveil simulate`` plugs in by
adding ``workers/commands/simulate.py``; nothing else changes. Modules starting with ``_`` are
helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["command_modules"]


def command_modules() -> list[ModuleType]:
    """Every subcommand module of this package, by name."""
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "register", None)):
            out.append(module)
    return out

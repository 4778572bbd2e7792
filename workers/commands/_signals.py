"""A stop event set by SIGINT/SIGTERM, for long-running subcommands."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["stop_on_signals"]


@contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """Within the block, SIGINT and SIGTERM set the yielded event instead of killing us.

    Installed before any server starts, so a signal during start-up still ends in an orderly
    stop (embedded servers run in their own sessions and would otherwise outlive us). Outside
    the main thread (a command run from a thread) no handler can be installed: the event is
    only set by whoever holds it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    in_main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)

"""``ionveil tail SUBJECT``: print each message on SUBJECT as one JSON line.

Works for core subjects (``ionveil.dashboard.updates.>``) and stream subjects
(``'ionveil.alerts.>'``): live by default; ``--replay`` first prints what the stream already
holds. Payloads are decoded as MessagePack, or JSON when the message says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from ionveil.errors import ValidationError
from workers.codec import decode_payload, to_wire
from workers.commands._common import add_common_options, connect, resolve_settings
from workers.commands._signals import stop_on_signals
from workers.settings import Settings

__all__ = ["format_message", "register"]


def format_message(subject: str, data: bytes, headers: dict[str, str] | None) -> str:
    """One JSON line: ``{"subject", "headers"?, "data"}`` (``error`` and ``raw`` if undecodable)."""
    line: dict[str, Any] = {"subject": subject}
    if headers:
        line["headers"] = dict(headers)
    try:
        value, _ = decode_payload(data, headers)
        line["data"] = to_wire(value)
    except ValidationError as exc:
        line["error"] = str(exc)
        line["raw"] = data[:256].hex()
    return json.dumps(line, default=repr, ensure_ascii=False)


async def _tail(args: argparse.Namespace, settings: Settings) -> int:
    seen = 0
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        nonlocal seen
        if done.is_set():
            return
        print(format_message(msg.subject, msg.data, msg.headers), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    with stop_on_signals() as stop:
        nc = await connect(settings, "ionveil-tail")
        try:
            if args.replay:
                js = nc.jetstream()
                await js.subscribe(
                    args.subject,
                    cb=on_msg,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.ALL,
                )
            else:
                await nc.subscribe(args.subject, cb=on_msg)
            await nc.flush()
            print(f"# tailing {args.subject}", file=sys.stderr, flush=True)
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, done)]
            _, pending = await asyncio.wait(
                waits, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        finally:
            await nc.drain()
    if args.count and seen < args.count:
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    return asyncio.run(_tail(args, settings))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tail``."""
    parser = subparsers.add_parser("tail", help="print messages on a subject", description=__doc__)
    parser.add_argument("subject", help="subject or wildcard, e.g. 'ionveil.alerts.>'")
    parser.add_argument(
        "--replay", action="store_true", help="start from the stream's first message"
    )
    parser.add_argument("--count", type=int, default=0, help="exit after N messages")
    parser.add_argument("--timeout", type=float, help="exit after S seconds")
    add_common_options(parser)
    parser.set_defaults(func=_run)

"""``ionveil up``: the whole fleet in one process, on embedded servers where none is configured.

Starts ``nats-server`` (JetStream) and PostgreSQL under ``IONVEIL_DATA_DIR`` (default
``./.ionveil``) unless ``IONVEIL_NATS_URL`` / ``IONVEIL_*_DSN`` name servers, then every worker
that exists, prints where everything is, and runs until SIGINT/SIGTERM: then every worker
drains and the embedded servers stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

from workers.commands._common import add_common_options, resolve_settings
from workers.commands._signals import stop_on_signals
from workers.fleet import DEFAULT_NATS_PORT, WORKERS, EmbeddedServers, Fleet
from workers.settings import DATABASES, Settings

__all__ = ["mask_dsn", "register", "summary"]


def mask_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***``."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


def summary(servers: EmbeddedServers, fleet: Fleet) -> str:
    """The one-screen summary of what runs where and what to try next."""
    settings: Settings = servers.settings
    host = settings.http_host if settings.http_host != "0.0.0.0" else "127.0.0.1"
    nats_origin = "embedded" if "nats" in servers.started else "external"
    pg_origin = "embedded" if "postgres" in servers.started else "external"
    lines = [
        "IonVeil is up",
        f"  data dir    {settings.data_dir.resolve()}",
        f"  NATS        {settings.nats_url}  ({nats_origin}, JetStream)",
    ]
    for index, db in enumerate(DATABASES):
        label = "  PostgreSQL  " if index == 0 else "              "
        lines.append(f"{label}{db:<10} {mask_dsn(settings.dsn(db) or '-')}  ({pg_origin})")
    lines.append(f"  Redis       {settings.redis_url or 'not configured (in-process hot state)'}")
    lines.append("  workers")
    for status in fleet.statuses:
        if status.state == "running":
            url = f"http://{host}:{status.http_port}"
            extra = f"   page {url}/" if status.name == "dashboard" else ""
            lines.append(f"    {status.name:<10} {url}/health  {url}/metrics{extra}")
        else:
            lines.append(f"    {status.name:<10} {status.state.upper()}: {status.reason}")
    lines += [
        "  try",
        "    ionveil demo --orgs metro,county --rate 10 --miss-org county",
        "    ionveil tail 'ionveil.policy.transitions.>'",
        "    ionveil tail 'ionveil.alerts.>'",
        "    ionveil worker dashboard   (another replica; set IONVEIL_HTTP_PORT_OFFSET)",
        "  Ctrl-C drains every worker and stops the embedded servers.",
    ]
    return "\n".join(lines)


async def _up(args: argparse.Namespace, settings: Settings) -> int:
    with stop_on_signals() as stop:
        servers = await asyncio.to_thread(EmbeddedServers.start, settings, nats_port=args.nats_port)
        try:
            async with Fleet(servers.settings, args.only) as fleet:
                print(summary(servers, fleet), flush=True)
                if not fleet.handles:
                    print("no worker could start; stopping", flush=True)
                    return 1
                await stop.wait()
                print("stopping: draining workers", flush=True)
        finally:
            await asyncio.to_thread(servers.stop)
    print("stopped", flush=True)
    return 1 if any(s.state == "failed" for s in fleet.statuses) else 0


def _run(args: argparse.Namespace) -> int:
    overrides = {}
    if args.http_port_offset is not None:
        overrides["http_port_offset"] = args.http_port_offset
    settings = resolve_settings(args, **overrides)
    if settings.log_level != "debug":
        # pgserver logs every initdb/pg_ctl line at info; its warnings still show.
        logging.getLogger("pgserver").setLevel(logging.WARNING)
    return asyncio.run(_up(args, settings))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``up``."""
    parser = subparsers.add_parser(
        "up", help="start the whole fleet (embedded servers where needed)", description=__doc__
    )
    parser.add_argument(
        "--only",
        type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
        metavar="NAMES",
        help=f"comma-separated workers to run (default: all of {', '.join(WORKERS)})",
    )
    parser.add_argument(
        "--nats-port",
        type=int,
        default=DEFAULT_NATS_PORT,
        help="client port of the embedded NATS (0 or busy: a free port; default 4222)",
    )
    parser.add_argument(
        "--http-port-offset",
        type=int,
        help="added to every contract HTTP port (default IONVEIL_HTTP_PORT_OFFSET or 0)",
    )
    add_common_options(parser)
    parser.set_defaults(func=_run)

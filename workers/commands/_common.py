"""What several subcommands share: settings (with a running fleet's servers), logging, NATS."""

from __future__ import annotations

import argparse
from typing import Any

from nats.aio.client import Client as NATS

from workers.fleet import with_running_servers
from workers.runtime import configure_logging
from workers.runtime.connections import connect_nats
from workers.settings import Settings, load_settings

__all__ = ["add_common_options", "connect", "resolve_settings"]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` (overrides ``IONVEIL_LOG_LEVEL``)."""
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: IONVEIL_LOG_LEVEL or info)",
    )


def resolve_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The environment's settings, servers of a running ``ionveil up`` filling the gaps;
    configures logging (to stderr) accordingly.

    Raises:
        ConfigurationError: an invalid ``IONVEIL_*`` variable (named).
    """
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    settings = with_running_servers(load_settings(**overrides))
    configure_logging(settings.log_level, settings.log_format)
    return settings


async def connect(settings: Settings, name: str) -> NATS:
    """A NATS connection with the configured credentials and TLS."""
    return await connect_nats(settings, name)

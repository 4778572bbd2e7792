"""A three-node NATS cluster on loopback for fault tests.

Each node is an ``EmbeddedNats`` with a generated configuration (``server_name``, a cluster
listen port and routes to the other nodes) and its own JetStream store directory, so a node
killed with SIGKILL and restarted comes back with its store and catches up from the others.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
from nats.js.errors import APIError, ServiceUnavailableError

from workers.embedded import EmbeddedNats, free_port

__all__ = ["NatsCluster"]

_CLUSTER_NAME = "ionveil-faults"


def _node_config(name: str, cluster_port: int, routes: list[int]) -> str:
    # JetStream and its store directory come from EmbeddedNats' command line (-js -sd).
    route_list = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in routes)
    return (
        f"server_name: {name}\n"
        "cluster {\n"
        f"  name: {_CLUSTER_NAME}\n"
        f"  listen: 127.0.0.1:{cluster_port}\n"
        f"  routes: [{route_list}]\n"
        "}\n"
    )


@dataclass
class NatsCluster:
    """Three (``size``) ``nats-server`` processes with cluster routes and JetStream.

    Args:
        base_dir: where configurations, stores and logs go (one sub-directory per node).
        size: number of nodes.
    """

    base_dir: Path
    size: int = 3
    nodes: list[EmbeddedNats] = field(default_factory=list, init=False)
    faults: int = field(default=0, init=False)

    def start(self) -> str:
        """Start every node; returns the comma-separated client URLs (``Settings.nats_url``)."""
        cluster_ports = [free_port() for _ in range(self.size)]
        for index in range(self.size):
            name = f"n{index + 1}"
            node_dir = self.base_dir / name
            node_dir.mkdir(parents=True, exist_ok=True)
            store = node_dir / "store"
            config = node_dir / "nats.conf"
            others = [p for i, p in enumerate(cluster_ports) if i != index]
            config.write_text(_node_config(name, cluster_ports[index], others))
            self.nodes.append(EmbeddedNats(store, config_file=config))
        for node in self.nodes:
            node.start()
        return self.url

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [node.url for node in self.nodes]

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (its store stays on disk)."""
        self.nodes[index].kill()
        self.faults += 1

    def restart(self, index: int) -> None:
        """Start node ``index`` again on the same ports with the same store."""
        self.nodes[index].start()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    async def wait_ready(self, timeout_s: float = 60.0, *, replicas: int | None = None) -> None:
        """Until JetStream has a meta leader and every running node is routed to the others.

        Args:
            timeout_s: give up after this long (``TimeoutError``).
            replicas: also wait until every existing stream has a leader and this many current
                replicas (e.g. after a node restarted and is catching up).
        """
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                if await self._ready_once(replicas):
                    return
            except (nats.errors.Error, APIError, OSError, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.25)
        raise TimeoutError(f"NATS cluster not ready after {timeout_s}s: {last!r}")

    async def _ready_once(self, replicas: int | None) -> bool:
        running = [node for node in self.nodes if node.running]
        nc = await nats.connect([n.url for n in running], allow_reconnect=False, connect_timeout=2)
        try:
            js = nc.jetstream(timeout=2)
            try:
                await js.account_info()
            except ServiceUnavailableError:
                return False
            if replicas is None:
                return True
            for info in await js.streams_info():
                cluster = info.cluster
                if cluster is None or not cluster.leader:
                    return False
                current = 1 + sum(1 for peer in cluster.replicas or [] if peer.current)
                if current < replicas:
                    return False
            return True
        finally:
            await nc.close()

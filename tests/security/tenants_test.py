"""Each real worker runs under its own user of the shipped NATS config, and tenants stay apart.

Extends ``tests/integration/nats_permissions_test.py`` (static permission checks and the
policy worker) with the other workers running as their users, and with a tenant trying
request-reply on another org's API and subscribing to another org's dashboard updates while
a real worker serves and publishes them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.security.conftest import ConnectAs, user_password
from workers.codec import decode_payload, encode_payload
from workers.fleet import load_worker
from workers.runtime import run_worker
from workers.settings import Settings

pytestmark = pytest.mark.security

# worker -> (who calls its API, subject of a request, body). The simulator's API has no org
# token, so no tenant may call it: operators do (admin).
SERVICES = {
    "analytics": ("tenant-metro", "ionveil.api.analytics.{org}.statistics", {}),
    "dashboard": ("tenant-metro", "ionveil.api.dashboard.{org}.snapshot", {}),
    "alerts": ("tenant-metro", "ionveil.api.alerts.{org}.active", {}),
    "simulator": ("admin", "ionveil.api.simulator.status", {"simulation_id": "nope"}),
}


def _settings(url: str, user: str, dsns: dict[str, str], tmp_path: Path) -> Settings:
    return Settings(
        nats_url=url,
        nats_user=user,
        nats_password=user_password(user),
        data_dir=tmp_path,
        log_format="console",
        **{f"{db}_dsn": dsn for db, dsn in dsns.items()},
    )


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_worker_runs_under_its_own_user(
    service: str, shipped_nats: str, connect_as: ConnectAs, dsns: dict[str, str], tmp_path: Path
) -> None:
    """The worker connects as its user, provisions streams, its durables and its advisory
    subscriptions, and answers a request on its API; no permission violation is reported."""
    caller, subject, body = SERVICES[service]
    settings = _settings(shipped_nats, service, dsns, tmp_path)
    with capture_logs() as logs:
        async with run_worker(load_worker(service)(), settings, http_port=0) as handle:
            client = await connect_as(caller)
            reply = await client.nc.request(
                subject.format(org="metro"), encode_payload(body), timeout=10
            )
            await handle.wait_idle(timeout_s=20)
            await asyncio.sleep(0.5)  # let late asynchronous -ERR lines arrive
    value, _ = decode_payload(reply.data, reply.headers)
    if service == "simulator":
        assert reply.headers and reply.headers.get("Nats-Service-Error-Code") == "404", value
    else:
        assert not (reply.headers or {}).get("Nats-Service-Error-Code"), value
    violations = [e for e in logs if "permissions violation" in str(e.get("error", ""))]
    assert not violations, violations


async def test_tenant_cannot_request_another_orgs_api(
    shipped_nats: str, connect_as: ConnectAs, dsns: dict[str, str], tmp_path: Path
) -> None:
    """With the real alerts worker serving every org, tenant metro's request to county's
    ``active`` is refused by the server (never reaches the worker, no reply), while its own
    request is answered."""
    settings = _settings(shipped_nats, "alerts", dsns, tmp_path)
    async with run_worker(load_worker("alerts")(), settings, http_port=0):
        metro = await connect_as("tenant-metro")
        own = await metro.nc.request("ionveil.api.alerts.metro.active", encode_payload({}), 10)
        assert decode_payload(own.data, own.headers)[0] == []
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await metro.nc.request("ionveil.api.alerts.county.active", encode_payload({}), 2)
        assert "publish" in await metro.violation()


async def test_tenant_cannot_subscribe_to_another_orgs_dashboard_updates(
    shipped_nats: str, connect_as: ConnectAs, dsns: dict[str, str], tmp_path: Path
) -> None:
    """While the real dashboard worker publishes live updates for both orgs, tenant metro
    receives its own and is refused a subscription to county's (and gets none of them)."""
    settings = _settings(shipped_nats, "dashboard", dsns, tmp_path)
    got: list[str] = []
    async with run_worker(load_worker("dashboard")(), settings, http_port=0) as handle:
        metro = await connect_as("tenant-metro")

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            got.append(msg.subject)

        await metro.nc.subscribe("ionveil.dashboard.updates.metro.>", cb=on_msg)
        await metro.nc.subscribe("ionveil.dashboard.updates.county.>", cb=on_msg)
        assert "subscription" in await metro.violation()
        publisher = await connect_as("publisher")
        js = publisher.nc.jetstream()
        from tests.faults._workload import dispatch_events

        for org in ("metro", "county"):
            for event in dispatch_events(org, 3):
                await js.publish(
                    f"ionveil.dispatch.events.{org}",
                    encode_payload(event),
                    headers={"Nats-Msg-Id": event["event_id"]},
                )
        await handle.wait_idle(timeout_s=20)
        deadline = asyncio.get_running_loop().time() + 10
        while not got and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
    assert got, "metro received none of its own updates"
    assert all(s.startswith("ionveil.dashboard.updates.metro.") for s in got), got


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.CONSUMER.MSG.NEXT.DISPATCH.policy-engine",
        "$JS.API.CONSUMER.INFO.INCIDENTS.alerts-incidents",
        "$JS.ACK.DISPATCH.policy-engine.1.1.1.1.1",
        "$JS.API.CONSUMER.DELETE.DISPATCH.dashboard-dispatch-x",
    ],
)
async def test_dashboard_cannot_touch_other_services_durables(
    connect_as: ConnectAs, subject: str
) -> None:
    """The dashboard may create its per-replica durables on DISPATCH/INCIDENTS/ALERTS, but
    not read, inspect, acknowledge for or delete another service's durable."""
    dashboard = await connect_as("dashboard")
    await dashboard.nc.publish(subject, b"{}")
    assert "publish" in await dashboard.violation()

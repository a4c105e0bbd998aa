"""The gateway's counters on its own /metrics port: a refused registration over real TCP
shows up in a real scrape, and the port closes with the gateway."""

from __future__ import annotations

import dataclasses
import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.metrics import GatewayCollector
from ingest.jt808.messages import RegistrationReply
from ingest.jt808.session import GatewayStats
from tests.conftest import free_port
from tests.ingest.jt808.test_jt808_gateway import SECRET, _register, gateway, new_phone

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_every_counter_field_is_exported() -> None:
    stats = GatewayStats(connections=2, connections_total=5, other_terminal=1, split_dropped=4)
    stats.count("unprovisioned")
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    reg.register(GatewayCollector(stats))
    got = samples(generate_latest(reg).decode())
    assert got[("fleetwatch_gateway_connections", ())] == 2
    assert got[("fleetwatch_gateway_connections_accepted_total", ())] == 5
    assert got[("fleetwatch_gateway_other_terminal_total", ())] == 1
    assert got[("fleetwatch_gateway_split_dropped_total", ())] == 4
    assert got[("fleetwatch_gateway_commands_sent_total", ())] == 0
    assert got[("fleetwatch_gateway_reasons_total", (("reason", "unprovisioned"),))] == 1
    names = {n for n, _ in got}
    for f in dataclasses.fields(GatewayStats):
        if f.name != "by_reason":  # each int counter has its metric
            short = "connections_accepted" if f.name == "connections_total" else f.name
            assert {f"fleetwatch_gateway_{short}", f"fleetwatch_gateway_{short}_total"} & names


async def test_refused_registration_in_a_real_scrape(mqtt_broker: tuple[str, int]) -> None:
    port = free_port()
    stranger = new_phone()
    async with gateway(mqtt_broker, auth_secret=SECRET, metrics_port=port) as addr:
        assert await _register(addr, stranger) == RegistrationReply(1, 4, "")
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200
        got = samples(r.text)
        assert got[("fleetwatch_gateway_registrations_refused_total", ())] == 1
        assert got[("fleetwatch_gateway_reasons_total", (("reason", "unprovisioned"),))] == 1
        assert got[("fleetwatch_gateway_connections_accepted_total", ())] >= 1
    with socket.socket() as s:  # the metrics server went with the gateway
        assert s.connect_ex(("127.0.0.1", port)) != 0

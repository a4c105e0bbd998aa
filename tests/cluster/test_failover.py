"""The failover bench's short form (``make test``): kill -9 of an engine node under load.

Real processes end to end, from fleetwatch.localcluster: an etcd and a Mosquitto of the
cluster's own, the shared PostgreSQL and Redis (own schema and key prefix), two ``fleetwatch
engine`` nodes, two ``fleetwatch web`` nodes behind a real haproxy, a websocket page through
haproxy, and the simulated city (300 vehicles, ~400 msg/s at QoS 1). The engine node owning
partitions is killed a third of the way into the load. Checked from PostgreSQL and from the
page's log, as ``fleetwatch bench failover`` does: no acknowledged position lost or stored
twice, no episode opened twice, every episode in history seen by the page, and the page shows
a position published after the kill, of a vehicle in a killed partition, within 10 s.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from fleet.cluster import partition_of
from fleetwatch.localcluster import Layout, LocalCluster
from fleetwatch.localcluster.harness import LoadPublisher, Nodes, PageClient, truth
from fleetwatch.localcluster.proc import wait_until
from simulator.fleet import FleetSpec, terminal_id, vehicle_id

pytestmark = [pytest.mark.services, pytest.mark.slow]

SHARED_PG = "postgresql://postgres@127.0.0.1:5432/test"
PARTITIONS = 4
WARM_S, AFTER_S = 6.0, 12.0
BASE = 21900  # this test's ports: 21900-21999 (the bench uses 20000)


def test_kill_9_of_an_engine_under_load_loses_nothing_and_the_page_follows(
    postgres: tuple[str, int], redis_server: tuple[str, int]
) -> None:
    # the shared PostgreSQL in place of the Patroni pair: the short form's budget has no room
    # for a Patroni bootstrap (the bench runs the pair)
    # under /tmp itself: the brokers drop root and must reach their directories
    root = Path(tempfile.mkdtemp(prefix="fw-failover-"))
    infra = LocalCluster(root, Layout(BASE), web_nodes=2)
    unique = uuid.uuid4().hex[:6]
    spec = FleetSpec(vehicles=300, seed=19)
    nodes = Nodes(
        infra,
        spec,
        partitions=PARTITIONS,
        schema=f"fo_test_{unique}",
        unique=unique,
        broker="mosquitto",
        redis_url="redis://127.0.0.1:6379/0",
        postgres_dsn=SHARED_PG,
    )
    t_start = time.monotonic()
    try:
        infra.up(("etcd", "mosquitto", "haproxy"))
        nodes.start_engine(0).wait_ready()
        nodes.start_engine(1)
        nodes.start_web(0)
        nodes.start_web(1)
        for p in [*nodes.engines.values(), *nodes.webs.values()]:
            p.wait_ready()
        nodes.wait_all_owned(30)
        wait_until(lambda: all(nodes.owned().values()), 20, "both engines own partitions")
        page = PageClient(f"ws://127.0.0.1:{infra.web_port}/ws/live")
        page.start()
        wait_until(lambda: page.connects >= 1, 10, "the page connects through haproxy")
        load = LoadPublisher(
            spec, infra.layout.mosquitto, PARTITIONS, rate=400, duration_s=WARM_S + AFTER_S,
            client_id=f"fw-test-load-{unique}",
        )  # fmt: skip
        load.start()
        time.sleep(WARM_S)
        owned = nodes.owned()[0]
        assert owned, "engine0 owns nothing: the kill would test nothing"
        touched = {
            vehicle_id(i)
            for i in range(spec.vehicles)
            if partition_of(terminal_id(i), PARTITIONS) in owned
        }
        t_kill = time.time()
        nodes.engines[0].kill9()
        load.join(AFTER_S + 30)
        assert load.error is None, load.error
        assert load.sent_messages > 0.7 * 400 * (WARM_S + AFTER_S), load.sent_messages
        acked = set(load.acked)
        wait_until(
            lambda: truth(SHARED_PG, nodes.schema, spec, acked, None, 0)["positions_lost"] == 0,
            25,
            "history holds every acknowledged position",
            poll_s=1.0,
        )
        time.sleep(1.5)  # late duplicates would land now
        page.stop()
        page.join(5)
        got = truth(SHARED_PG, nodes.schema, spec, acked, page, 0)
        print("short failover:", got, f"({time.monotonic() - t_start:.1f} s)")
        assert got["published_positions"] == len(load.published)  # every publish acknowledged
        assert got["positions_lost"] == 0
        assert got["positions_stored_twice"] == 0
        assert got["episodes"] > 0, "no episode at all: the alarm checks would be vacuous"
        assert got["episodes_opened_twice"] == 0
        assert got["alarms_never_on_page"] == 0
        assert nodes.owned()[1] == list(range(PARTITIONS))  # the survivor took everything
        terminal_of = {vehicle_id(i): terminal_id(i) for i in range(spec.vehicles)}
        live = [
            arrived - t_kill
            for vehicle, ts, arrived in page.positions
            if vehicle in touched
            and arrived > t_kill
            and load.published.get((terminal_of[vehicle], ts), 0.0) > t_kill
        ]
        assert live, "the page never showed a killed partition's vehicle again"
        assert min(live) <= 10.0, min(live)
    finally:
        infra.down(graceful=False)
        _drop(nodes.schema)
        shutil.rmtree(root, ignore_errors=True)


def _drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(SHARED_PG, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

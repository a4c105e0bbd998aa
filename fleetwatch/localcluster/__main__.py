"""``python -m fleetwatch.localcluster up``: the whole cluster on this machine until Ctrl-C.

Starts the infrastructure (:class:`LocalCluster`), then ``--engines`` engine nodes and
``--webs`` web nodes of a simulated city of ``--vehicles`` (configuration written under
``--root``/nodes), prints where everything listens (JSON), and with ``--load RATE`` publishes
the simulated city at RATE msg/s. SIGTERM or Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import uuid
from pathlib import Path

from fleetwatch.localcluster.cluster import LocalCluster
from fleetwatch.localcluster.harness import LoadPublisher, Nodes
from fleetwatch.localcluster.layout import Layout
from simulator.fleet import FleetSpec

PIECES = ("etcd", "redis", "patroni", "mosquitto", "nats", "haproxy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fleetwatch.localcluster")
    ap.add_argument("action", choices=["up"])
    ap.add_argument("--root", type=Path, default=Path("var/localcluster"))
    ap.add_argument("--base", type=int, default=20000, help="first port (20000..21900, ×100)")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--webs", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--vehicles", type=int, default=500)
    ap.add_argument("--broker", choices=["nats", "mosquitto"], default="nats")
    ap.add_argument("--load", type=float, default=0.0, help="publish the city at this msg/s")
    a = ap.parse_args(argv)
    cluster = LocalCluster(a.root.resolve(), Layout(a.base), web_nodes=a.webs)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        cluster.up(PIECES)
        u = uuid.uuid4().hex[:6]
        spec = FleetSpec(vehicles=a.vehicles, seed=19)
        nodes = Nodes(
            cluster, spec, partitions=a.partitions, schema=f"fw_local_{u}", unique=u,
            broker=a.broker,
        )  # fmt: skip
        if a.engines:
            nodes.start_engine(0).wait_ready()  # the first creates the schema alone
        for i in range(1, a.engines):
            nodes.start_engine(i)
        for i in range(a.webs):
            nodes.start_web(i)
        for p in [*nodes.engines.values(), *nodes.webs.values()]:
            p.wait_ready()
        status = cluster.status()
        status["schema"] = nodes.schema
        status["page"] = f"http://127.0.0.1:{cluster.web_port}/?token=demo-room-token"
        print(json.dumps(status, indent=2), flush=True)
        if a.load > 0:
            load = LoadPublisher(
                spec, nodes.mqtt_port, a.partitions, rate=a.load, duration_s=10**9,
                client_id=f"fw-local-load-{u}",
            )  # fmt: skip
            load.start()
        stop.wait()
    finally:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

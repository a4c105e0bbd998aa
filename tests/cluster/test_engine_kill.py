"""kill -9 of the engine node owning a partition, under load: the standby takes over.

Real etcd and Mosquitto of our own, the shared PostgreSQL and Redis; two ``fleetwatch
engine`` processes and one ``fleetwatch web``. The publisher sends every vehicle's
position each 0.25 s at QoS 1 on its partition's topic; vehicle v0 speeds all along, so
its speeding episode is open when the owner of its partition is killed. After the
takeover: every position stored once (none lost, none twice), the episode still the one
with the id it had before the kill, no episode opened twice, and a clean SIGTERM of the
survivor leaves no key in etcd.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import etcd3gw
import pytest

from fleet.cluster import partition_of
from tests.brokers import Broker
from tests.cluster import nodes as N
from tests.cluster.conftest import Etcd, own_port

pytestmark = [pytest.mark.services, pytest.mark.slow]

VEHICLES = 120
ROUNDS = 60
TOTAL = VEHICLES * ROUNDS


def test_kill_9_of_the_owner_under_load_loses_nothing_and_keeps_the_episode(
    etcd: Etcd,
    own_broker: Broker,
    postgres: tuple[str, int],
    redis_server: tuple[str, int],
    tmp_path: Path,
    unique: str,
) -> None:
    schema = f"cluster_{unique}"
    cfg = N.write_config(
        tmp_path,
        unique=unique,
        mqtt_port=own_broker.port,
        etcd_url=etcd.url,
        schema=schema,
        vehicles=VEHICLES,
    )
    logs = {n: tmp_path / f"{n}.log" for n in ("a", "b", "web")}
    ports = {n: own_port() for n in logs}
    procs = {"a": N.engine(cfg, "a", ports["a"], logs["a"])}
    every = list(logs.values())
    try:
        N.wait_for("a owns both", lambda: N.health(ports["a"]).get("owned") == [0, 1], 30, every)
        procs["b"] = N.engine(cfg, "b", ports["b"], logs["b"])
        procs["web"] = N.spawn(
            ["web", "--config", str(cfg), "--port", str(ports["web"])], logs["web"]
        )

        def split() -> bool:
            ha, hb = N.health(ports["a"]), N.health(ports["b"])
            return bool(ha.get("ready") and hb.get("ready")) and {
                len(ha["owned"]),
                len(hb["owned"]),
            } == {1}

        N.wait_for("one partition each", split, 30, every)
        t0 = int(time.time() * 1000) - (ROUNDS + 10) * 1000
        pub = N.Publisher(own_broker.port, VEHICLES, ROUNDS, 2, t0, 0.25)
        pub.start()

        def speeding() -> list[str]:
            return [i for i, v, k, _ in N.episodes(schema) if v == "v0" and k == "speeding"]

        before = N.wait_for("v0's speeding episode", speeding, 30, every)
        N.wait_for("a third stored", lambda: N.stored(schema)[0] >= TOTAL // 3, 30, every)
        k = partition_of(N.terminal(0), 2)
        victim = next(n for n in ("a", "b") if k in N.health(ports[n]).get("owned", []))
        survivor = "b" if victim == "a" else "a"
        old_epoch = N.health(ports[victim])["epochs"][str(k)]
        stored_at_kill = N.stored(schema)[0]
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(10)
        killed = time.monotonic()
        assert stored_at_kill < TOTAL, "the kill came after the load: not a test under load"

        def took_over() -> dict[str, object]:
            h = N.health(ports[survivor])
            return h if h.get("owned") == [0, 1] and h.get("ready") else {}

        h = N.wait_for("the standby takes over", took_over, 20, every)
        takeover_s = time.monotonic() - killed
        assert int(h["epochs"][str(k)]) > int(old_epoch)  # type: ignore[index]
        pub.join(60)
        assert pub.done.is_set(), "publisher did not finish"
        N.wait_for("every position stored", lambda: N.stored(schema)[0] >= TOTAL, 30, every)
        time.sleep(1.0)  # anything late would show as a duplicate now
        assert N.stored(schema) == (TOTAL, TOTAL)
        eps = N.episodes(schema)
        assert speeding() == before, (before, speeding())
        assert [s for i, v, kd, s in eps if i == before[0]] == ["open"]
        assert not [i for i, *_ in eps if i.endswith(":backfill")]
        twice = {key: n for key, n in Counter((v, kd) for _, v, kd, _ in eps).items() if n > 1}
        assert not twice, twice  # continuous driving: one episode per vehicle and kind
        assert N.health(ports["web"], "/healthz").get("ok") is True
        print(f"takeover after kill -9: {takeover_s:.2f} s; stored at kill {stored_at_kill}")

        assert N.stop(procs[survivor]) == 0, logs[survivor].read_text()[-3000:]
        client = etcd3gw.client(port=etcd.port)
        assert client.get_prefix(f"/fw-{unique}/") == []  # released: lease revoked
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        N.drop_schema(schema)

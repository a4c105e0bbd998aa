"""An operator's close, sent on the command bus as a web node sends it, reaches the engine
node owning the vehicle's partition: the episode closes there (and in history), marked
with who closed it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest
import redis

from tests.brokers import Broker
from tests.cluster import nodes as N
from tests.cluster.conftest import Etcd, own_port

pytestmark = [pytest.mark.services]


def test_a_close_by_hand_on_the_bus_closes_the_episode_in_the_owning_engine(
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
        vehicles=4,
    )
    log, port = tmp_path / "a.log", own_port()
    proc = N.engine(cfg, "a", port, log)
    try:
        N.wait_for("ready", lambda: N.health(port).get("owned") == [0, 1], 30, [log])
        N.wait_for("ready", lambda: N.health(port).get("ready"), 30, [log])
        t0 = int(time.time() * 1000) - 40_000
        pub = N.Publisher(own_broker.port, 4, 20, 2, t0, 0.05)
        pub.start()
        pub.join(30)

        def open_speeding() -> list[str]:
            return [
                i for i, v, k, s in N.episodes(schema)
                if v == "v0" and k == "speeding" and s == "open"
            ]  # fmt: skip

        (alarm_id,) = N.wait_for("an open episode", open_speeding, 20, [log])
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        cmd = {"op": "close", "node": "web-test", "id": alarm_id, "at": t0 + 30_000,
               "by": "duty-officer", "note": "checked by phone"}  # fmt: skip
        r.publish(f"fwc{unique}:web:commands", json.dumps(cmd))
        r.close()

        def closed() -> dict[str, object]:
            with psycopg.connect(N.PG) as c:
                row = c.execute(
                    f"SELECT state, detail FROM {schema}.alarms WHERE id = %s", (alarm_id,)
                ).fetchone()
            return row[1] if row and row[0] == "closed" else {}

        detail = N.wait_for("closed in history", closed, 15, [log])
        assert detail["closed_by"] == "duty-officer", detail
        assert N.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        N.drop_schema(schema)

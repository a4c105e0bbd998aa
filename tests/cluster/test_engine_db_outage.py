"""PostgreSQL away under load: an engine node acknowledges nothing it could not write to the
shared database (no local spool on engine nodes), so the broker keeps it; when the database
is back every position is stored once."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.brokers import Broker
from tests.cluster import nodes as N
from tests.cluster.conftest import Etcd, own_port
from tests.conftest import IN_CI
from tests.private_services import PG_BIN, PrivatePostgres

pytestmark = [pytest.mark.services, pytest.mark.slow]

VEHICLES, ROUNDS = 60, 30


def test_database_outage_under_load_loses_nothing(
    etcd: Etcd, own_broker: Broker, redis_server: tuple[str, int], tmp_path: Path, unique: str
) -> None:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        if IN_CI:
            pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN}")
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    pg = PrivatePostgres()
    pg.port = own_port()
    pg.dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    pg.start()
    schema = f"cluster_{unique}"
    cfg = N.write_config(
        tmp_path,
        unique=unique,
        mqtt_port=own_broker.port,
        etcd_url=etcd.url,
        schema=schema,
        vehicles=VEHICLES,
        postgres_dsn=pg.dsn,
    )
    log, port = tmp_path / "a.log", own_port()
    proc = N.engine(cfg, "a", port, log)
    try:
        N.wait_for("ready", lambda: N.health(port).get("owned") == [0, 1], 30, [log])
        N.wait_for("ready", lambda: N.health(port).get("ready"), 30, [log])
        t0 = int(time.time() * 1000) - (ROUNDS + 10) * 1000
        pub = N.Publisher(own_broker.port, VEHICLES, ROUNDS, 2, t0, 0.2)
        pub.start()
        N.wait_for("some stored", lambda: N.stored(schema, pg.dsn)[0] > 300, 20, [log])
        pg.stop("immediate")
        time.sleep(3.0)  # publishing goes on: the broker queues
        pg.start()
        pub.join(60)
        assert pub.done.is_set()
        total = VEHICLES * ROUNDS
        N.wait_for("all stored", lambda: N.stored(schema, pg.dsn)[0] >= total, 40, [log])
        time.sleep(1.0)
        assert N.stored(schema, pg.dsn) == (total, total)
        assert not list((tmp_path / "spool").glob("*")) if (tmp_path / "spool").exists() else True
        assert N.stop(proc) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        pg.destroy()

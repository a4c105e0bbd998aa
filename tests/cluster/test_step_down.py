"""Fencing in time and clean hand-over, against a real etcd and Mosquitto.

* etcd frozen (SIGSTOP: no answer, no error): the owner stops consuming by its
  deadline, ``lease_ttl_s - step_down_margin_s`` after its last good keep-alive —
  before etcd could expire its lease and let another node claim; when etcd answers
  again it takes a new lease and claims again, with higher epochs.
* SIGTERM of an owner: it releases (flush, ack, save, revoke the lease) and the
  standby owns everything within a couple of seconds, not after the lease's TTL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.brokers import Broker
from tests.cluster import nodes as N
from tests.cluster.conftest import Etcd, own_port

pytestmark = [pytest.mark.services, pytest.mark.slow]

TTL, MARGIN, RENEW = 4.0, 1.5, 0.5  # as nodes.write_config sets them


def _cfg(tmp_path: Path, etcd: Etcd, broker: Broker, unique: str) -> Path:
    return N.write_config(
        tmp_path,
        unique=unique,
        mqtt_port=broker.port,
        etcd_url=etcd.url,
        schema=f"cluster_{unique}",
        vehicles=20,
    )


def test_frozen_etcd_the_owner_steps_down_before_its_lease_can_expire(
    etcd: Etcd,
    own_broker: Broker,
    postgres: tuple[str, int],
    redis_server: tuple[str, int],
    tmp_path: Path,
    unique: str,
) -> None:
    cfg = _cfg(tmp_path, etcd, own_broker, unique)
    log, port = tmp_path / "a.log", own_port()
    proc = N.engine(cfg, "a", port, log)
    try:
        N.wait_for("owner", lambda: N.health(port).get("ready"), 30, [log])
        first = N.health(port)["epochs"]
        assert N.health(port)["owned"] == [0, 1]
        time.sleep(2 * RENEW)
        os.kill(etcd.proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            N.wait_for("step-down", lambda: N.health(port).get("owned") == [], 10, [log])
            after = time.monotonic() - frozen
        finally:
            os.kill(etcd.proc.pid, signal.SIGCONT)
        # its last good keep-alive went out at most ~RENEW + a request time-out before the
        # freeze, so etcd keeps the lease until at least frozen + TTL - RENEW - 1 s
        assert after <= TTL - RENEW - 1.0, after
        assert after >= TTL - MARGIN - RENEW - 1.0 - 0.01, after  # not before it had to
        h = N.health(port)
        assert h["step_downs"] >= 2
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "fleetwatch_cluster_step_downs 2.0" in text, text[-2000:]

        def again() -> bool:
            h = N.health(port)
            return h.get("owned") == [0, 1] and bool(h.get("ready"))

        N.wait_for("claims again", again, 20, [log])
        later = N.health(port)["epochs"]
        assert all(int(later[k]) > int(first[k]) for k in first), (first, later)
        print(f"step-down {after:.2f} s after etcd froze (deadline {TTL - MARGIN} s)")
        assert N.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        N.drop_schema(f"cluster_{unique}")


def test_sigterm_hands_over_at_once(
    etcd: Etcd,
    own_broker: Broker,
    postgres: tuple[str, int],
    redis_server: tuple[str, int],
    tmp_path: Path,
    unique: str,
) -> None:
    cfg = _cfg(tmp_path, etcd, own_broker, unique)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    pa, pb = own_port(), own_port()
    a = N.engine(cfg, "a", pa, logs[0])
    procs = [a]
    try:
        N.wait_for("a owns", lambda: N.health(pa).get("owned") == [0, 1], 30, logs)
        b = N.engine(cfg, "b", pb, logs[1])
        procs.append(b)
        N.wait_for("split", lambda: len(N.health(pb).get("owned", [])) == 1, 30, logs)
        N.wait_for("b ready", lambda: N.health(pb).get("ready"), 30, logs)
        t = time.monotonic()
        assert N.stop(a) == 0, logs[0].read_text()[-3000:]

        def b_owns_all() -> bool:
            h = N.health(pb)
            return h.get("owned") == [0, 1] and bool(h.get("ready"))

        N.wait_for("b owns both", b_owns_all, 10, logs)
        handover = time.monotonic() - t
        assert handover < TTL, handover  # the lease was revoked, not waited out
        print(f"hand-over after SIGTERM (stop included): {handover:.2f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        N.drop_schema(f"cluster_{unique}")

"""What holds when a NATS node dies under an MQTT QoS 1 persistent session (issue 19:
"report exactly what holds"): three real nats-server processes clustered with JetStream,
the session created on the node that is then killed -9, the client back on another node.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from fleetwatch.localcluster import Layout, LocalCluster
from fleetwatch.localcluster.probes import probe_nats_session
from tests.conftest import IN_CI

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_a_persistent_session_survives_the_kill_of_its_nats_node() -> None:
    if shutil.which("nats-server") is None and not Path("/usr/sbin/nats-server").exists():
        if IN_CI:
            pytest.fail("nats-server is not installed")
        pytest.skip("nats-server is not installed")
    root = Path(tempfile.mkdtemp(prefix="fw-nats-"))
    cluster = LocalCluster(root, Layout(21800))
    try:
        cluster.up(("nats",))
        got = probe_nats_session(cluster, n=100, settle_s=45.0)  # JetStream re-elects: 6-30 s
        print("NATS node kill:", got)
        queued, inflight = got["queued"], got["inflight"]
        assert queued["session_present"] is True
        assert queued["lost"] == 0 and queued["delivered_twice"] == 0
        assert inflight["session_present"] is True
        assert inflight["lost"] == 0  # in flight, unacknowledged: delivered again
        assert inflight["dup_flag"] > 0  # ... marked as a redelivery
    finally:
        cluster.down(graceful=False)
        shutil.rmtree(root, ignore_errors=True)

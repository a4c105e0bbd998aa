"""deploy/mosquitto.conf: a persistent session keeps far more than Mosquitto's default 1,000
queued messages, across a broker restart.

Starts its own broker from the shipped file (port, persistence folder and authentication
rewritten for the test) and never touches the shared one.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.brokers import CONF, Broker

N = 5000  # five times the default queue limit

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_config_states_its_sizing() -> None:
    text = CONF.read_text()
    settings = dict(re.findall(r"^(\w+) (\S+)$", text, flags=re.MULTILINE))
    assert settings["persistence"] == "true"
    queued = int(settings["max_queued_messages"])
    assert queued >= 30 * 60 * 1000  # a 30 min outage at 1,000 msg/s, as the comment says
    assert int(settings["max_inflight_messages"]) >= 20_000
    assert settings["persistent_client_expiration"].endswith("d")


def test_persistent_session_keeps_an_outage_worth_of_messages(broker: Broker) -> None:
    common = ["-h", "127.0.0.1", "-p", str(broker.port), "-q", "1"]
    sub = ["mosquitto_sub", *common, "-c", "-i", "fw-conf-test", "-t", "fleet/+/position"]
    subprocess.run([*sub, "-E"], check=True, timeout=10)  # create the session, go away
    lines = "".join(f'{{"ts": {i}, "lat": 30.5, "lon": 106.6}}\n' for i in range(N))
    subprocess.run(
        ["mosquitto_pub", *common, "-t", "fleet/t1/position", "-l"],
        input=lines.encode(),
        check=True,
        timeout=60,
    )
    broker.stop()  # the broker restarts while the consumer is away
    broker.start()
    out = subprocess.run(
        [*sub, "-C", str(N), "-W", "20"], capture_output=True, check=False, timeout=30
    )
    got = out.stdout.decode().splitlines()
    assert len(got) == N
    assert got[0].startswith('{"ts": 0,') and got[-1].startswith(f'{{"ts": {N - 1},')

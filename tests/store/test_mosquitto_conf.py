"""deploy/mosquitto.conf: a persistent session keeps far more than Mosquitto's default 1,000
queued messages, across a broker restart.

Starts its own broker from the shipped file (port, persistence folder and authentication
rewritten for the test) and never touches the shared one.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port, port_open

CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto.conf"
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


def conf_for_test(tmp_path: Path, port: int) -> Path:
    """The shipped configuration on ``port``, persisting into ``tmp_path``, anonymous.

    ``tmp_path`` must be reachable by the ``mosquitto`` user (the broker drops root).
    """
    text = CONF.read_text()
    text = re.sub(r"^listener \d+.*$", f"listener {port} 127.0.0.1", text, flags=re.MULTILINE)
    text = re.sub(
        r"^persistence_location .*$", f"persistence_location {tmp_path}/", text, flags=re.MULTILINE
    )
    text = re.sub(r"^allow_anonymous false$", "allow_anonymous true", text, flags=re.MULTILINE)
    text = re.sub(r"^password_file .*$", "", text, flags=re.MULTILINE)
    path = tmp_path / "mosquitto.conf"
    path.write_text(text)
    shutil.chown(tmp_path, "mosquitto")
    return path


class Broker:
    def __init__(self, conf: Path, port: int) -> None:
        self.conf, self.port = conf, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop writes the persistence file
            self.proc.wait(20)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_sub") is None:
        if IN_CI:
            pytest.fail("mosquitto is not installed")
        pytest.skip("mosquitto is not installed")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="fw-mqtt-"))  # pytest's tmp_path is root-only
    b = Broker(conf_for_test(folder, port), port)
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(folder, ignore_errors=True)


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

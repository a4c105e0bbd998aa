"""Real services for the cluster tests: an etcd and a Mosquitto of our own (ports 23000-23999,
the engine slice's range), and the shared PostgreSQL and Redis. With CI=true a missing
binary or service fails the test."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Broker, conf_for_test
from tests.conftest import IN_CI, port_open

PORTS = range(23000, 24000)


def own_port() -> int:
    """A free port of this slice's range."""
    for _ in range(200):
        p = random.choice(PORTS)
        if not port_open("127.0.0.1", p, 0.05):
            return p
    raise RuntimeError("no free port in 23000-23999")


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        if IN_CI:
            pytest.fail(f"{binary} is not installed")
        pytest.skip(f"{binary} is not installed")


class Etcd:
    def __init__(self, folder: Path) -> None:
        self.port, self.peer = own_port(), own_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (folder / "etcd.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "etcd",
                "--data-dir", str(folder / "etcd"),
                "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("etcd did not start: " + (folder / "etcd.log").read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    _need("etcd")
    folder = Path(tempfile.mkdtemp(prefix="fw-etcd-"))
    e = Etcd(folder)
    try:
        yield e
    finally:
        e.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """Mosquitto from deploy/mosquitto.conf (queues sized for outages) on this range."""
    _need("mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="fw-mqtt-"))
    port = own_port()
    b = Broker(conf_for_test(folder, port), port)
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(folder, ignore_errors=True)

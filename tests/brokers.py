"""A Mosquitto of our own, started from the shipped deploy/mosquitto.conf on a free port.

Tests that stop or restart the broker, or depend on its queue limits, use this instead of
the shared broker on 1883, which other tests use at the same time.
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

CONF = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto.conf"


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

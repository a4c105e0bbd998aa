"""Shared fixtures of the JT/T 808 tests: the vectors file and the real broker."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from jt808_helpers import load_vectors

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    return load_vectors()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    """The real Mosquitto; fails under CI=true when it is missing, skips otherwise."""
    if not _reachable(MQTT_HOST, MQTT_PORT):
        if os.environ.get("CI") == "true":
            pytest.fail(f"Mosquitto is not reachable at {MQTT_HOST}:{MQTT_PORT}")
        pytest.skip(f"Mosquitto is not reachable at {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT

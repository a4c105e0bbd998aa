"""Fixtures for the simulator tests: a paho subscriber on the real broker."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest


class Collector:
    def __init__(self, host: str, port: int, topic: str, client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect(host, port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()
        assert self.ready.wait(5)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def collector(mosquitto: tuple[str, int], unique: str) -> Iterator[Collector]:
    c = Collector(*mosquitto, f"sim{unique}/#", f"sim-test-sub-{unique}")
    yield c
    c.close()

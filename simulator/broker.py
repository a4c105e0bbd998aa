"""An embedded MQTT broker (amqtt) for ``fleetwatch demo`` and ``fleetwatch simulate
--embedded``: nothing to install, one process."""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["embedded_broker"]


@contextlib.asynccontextmanager
async def embedded_broker(port: int) -> Any:
    """An amqtt broker on 127.0.0.1:``port`` for the demo (about 4,000 msg/s: enough here)."""
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield broker
    finally:
        await broker.shutdown()

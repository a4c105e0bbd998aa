"""The JT/T 808 gateway publishes a terminal's frames on its partition's topic."""

from __future__ import annotations

import asyncio
import secrets

import aiomqtt
import pytest

from fleet.cluster import partition_of
from ingest.jt808.codec import encode_registration
from ingest.jt808.config import GatewayConfig
from ingest.jt808.registrations import SqliteRegistrations
from ingest.jt808.session import ProvisionedTerminal, Provisioning
from ingest.jt808.tcp import run_gateway

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]


async def test_frames_go_up_on_the_partition_topic(mosquitto: tuple[str, int]) -> None:
    phone = f"{secrets.randbelow(10**11) + 10**11}"
    k = partition_of(phone, 4)
    cfg = GatewayConfig(
        listen_port=0,
        mqtt_host=mosquitto[0],
        mqtt_port=mosquitto[1],
        mqtt_client_id=f"test-gw-{secrets.token_hex(4)}",
    )
    prov = Provisioning([ProvisionedTerminal(phone, f"v{phone}", f"川X{phone[-5:]}")])
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    async with aiomqtt.Client(*mosquitto, identifier=f"test-sub-{secrets.token_hex(4)}") as sub:
        await sub.subscribe(f"p{k}/jt808/{phone}/up", qos=1)
        await sub.subscribe(f"jt808/{phone}/up", qos=1)  # must stay silent
        task = asyncio.create_task(
            run_gateway(
                cfg,
                provisioning=prov,
                registrations=SqliteRegistrations(":memory:"),
                stop=stop,
                started=started,
                partitions=4,
            )
        )
        try:
            host, port = await asyncio.wait_for(started, 10)
            _reader, writer = await asyncio.open_connection(host, port)
            reg = encode_registration(phone, 1, plate=f"川X{phone[-5:]}")
            writer.write(reg)
            await writer.drain()
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    assert str(message.topic) == f"p{k}/jt808/{phone}/up"
                    assert message.payload == reg
                    break
            writer.close()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

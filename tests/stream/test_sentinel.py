"""Redis Sentinel: a real master + replica + sentinel, the master killed under the feed.

Ports 16400-16409 (the feed helper's range, CONTRACTS.md); every process is started
here and stopped by its own handle.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleet.errors import Misuse
from fleet.events import AlarmEvent
from fleet.registry import Registry
from store.fanout import Fanout
from store.redisconn import parse_redis_url, redis_client
from stream.feed import FeedCore
from stream.relay import RelayIn, RelayOut
from tests.conftest import IN_CI, port_open

T0 = 1_764_034_200_000
MASTER, REPLICA, SENTINEL = 16401, 16402, 16403


def test_parse_redis_url() -> None:
    t = parse_redis_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/fleet/2")
    assert t.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (t.master, t.db, t.password, t.sentinel) == ("fleet", 2, "pw", True)
    assert parse_redis_url("redis://127.0.0.1:6379/0").url == "redis://127.0.0.1:6379/0"
    for bad, why in (
        ("redis+sentinel://h1:26379/", "/master"),
        ("redis+sentinel://h1/fleet", "host:port"),
        ("redis+sentinel://h1:1/fleet/x", "not a number"),
        ("redis+sentinel://h1:1/fleet?x=1", "unknown parameter"),
        ("http://h1:1/", "unknown scheme"),
    ):
        with pytest.raises(Misuse, match=why):
            parse_redis_url(bad)
    with pytest.raises(Misuse) as err:
        parse_redis_url("redis+sentinel://:secret@h1/fleet")
    assert "secret" not in str(err.value)


class SentinelSet:
    """redis-server master and replica (no persistence) and one sentinel, quorum 1."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fw-sentinel-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def _server(self, port: int, *extra: str) -> None:
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.dir), *extra]
        self.procs[port] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start(self) -> None:
        self._server(MASTER)
        self._server(REPLICA, "--replicaof", "127.0.0.1", str(MASTER))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {SENTINEL}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor fleet 127.0.0.1 {MASTER} 1\n"
            "sentinel down-after-milliseconds fleet 500\n"
            "sentinel failover-timeout fleet 3000\n"
            "sentinel parallel-syncs fleet 1\n"
        )
        self.procs[SENTINEL] = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not all(port_open("127.0.0.1", p, 0.2) for p in (MASTER, REPLICA, SENTINEL)):
            if time.monotonic() > deadline:
                raise RuntimeError("sentinel set did not start")
            time.sleep(0.05)

    def restart_master(self) -> None:
        self._server(MASTER)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for port in list(self.procs):
            proc = self.procs.pop(port)
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    if shutil.which("redis-server") is None:
        msg = "redis-server not installed"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    for p in (MASTER, REPLICA, SENTINEL):
        if port_open("127.0.0.1", p, 0.2):
            pytest.fail(f"port {p} is taken: another run of this test still up?")
    s = SentinelSet()
    s.start()
    try:
        yield s
    finally:
        s.stop()


def ev(v: int, vid: str, n: int) -> AlarmEvent:
    return AlarmEvent(
        id=f"{vid}:speeding:{T0 + n}",
        vehicle=v,
        vehicle_id=vid,
        kind="speeding",
        action="open",
        started_at=T0 + n,
        ts=T0 + n,
        lat=30.4,
        lon=106.6,
    )


async def until(cond: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.services
@pytest.mark.slow
async def test_master_killed_no_alarm_lost_on_the_page(
    registry: Registry, sentinel_set: SentinelSet
) -> None:
    url = f"redis+sentinel://127.0.0.1:{SENTINEL}/fleet"
    probe = redis_client(url)
    for _ in range(200):  # the replica is in sync before the test starts
        info = await probe.info("replication")
        if isinstance(info.get("slave0"), dict) and info["slave0"].get("state") == "online":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"replica never in sync: {info}")
    sentinel = redis_client(f"redis://127.0.0.1:{SENTINEL}/0")
    for _ in range(300):  # ... and the sentinel knows it (its INFO poll: every 10 s at worst)
        replicas = await sentinel.execute_command("SENTINEL", "REPLICAS", "fleet")
        if replicas:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the sentinel never saw the replica")
    await probe.set("s:probe", "1")
    assert await probe.wait(1, 5000) == 1, "the replica does not acknowledge writes"
    out_fan = Fanout(url, "s:", wait_replicas=1, wait_ms=300)
    in_fan = Fanout(url, "s:")
    out = RelayOut(out_fan, registry, node="engine", retry_s=0.2, settle_s=0)
    feed = FeedCore(registry, node="web-1", interval_ms=50)
    relay = RelayIn(in_fan, feed, node="web-1", retry_s=0.2, block_ms=200)
    tasks = [asyncio.create_task(out.run()), asyncio.create_task(relay.run())]
    try:
        await asyncio.wait_for(relay.subscribed.wait(), 5)
        feed.connect(1, "city", T0)
        out.alarm(ev(0, "V1", 1))
        await until(lambda: len(feed.alarm_items()) == 1)
        assert await out.drained()  # the WAIT came back
        assert out.stats.alarms_replicated == 1 and out.stats.alarms_at_risk == 0
        # the master dies (kill -9); alarms keep coming while Sentinel promotes the replica
        sentinel_set.kill(MASTER)
        started = time.monotonic()
        for n, v in ((2, 1), (3, 2), (4, 3)):
            out.alarm(ev(v, f"V{v + 1}", n))
        await until(lambda: len(feed.alarm_items()) == 4, timeout=20)
        took = time.monotonic() - started
        assert await out.drained()
        master = await sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "fleet")
        assert int(master[1]) == REPLICA
        frames = [orjson.loads(f) for f in feed.drain(1)]
        got = [f["alarm"]["id"] for f in frames if f["type"] == "alarm"]
        assert got == [f"V{v + 1}:speeding:{T0 + n}" for n, v in ((1, 0), (2, 1), (3, 2), (4, 3))]
        # no replica left behind the new master: what it took now is at risk, and counted
        assert out.stats.alarms_untracked == 0
        assert out.stats.alarms_published == 4 + out.stats.alarms_republished
        print(f"failover: alarms on the page again after {took:.1f} s")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for f in (out_fan, in_fan):
            await f.close()
        await probe.aclose()
        await sentinel.aclose()


@pytest.mark.services
async def test_an_alarm_the_new_master_lacks_is_published_again(
    registry: Registry, sentinel_set: SentinelSet
) -> None:
    """A real loss: no replica confirms (it is dead), then the master is killed and comes
    back empty (no persistence, as configured here). The relay sees the outage, finds the
    alarm at risk missing on the master it reaches now, and publishes it again."""
    url = f"redis+sentinel://127.0.0.1:{SENTINEL}/fleet"
    sentinel_set.kill(REPLICA)
    fan = Fanout(url, "r:", wait_replicas=1, wait_ms=100)
    out = RelayOut(fan, registry, node="engine", retry_s=0.1, settle_s=0)
    task = asyncio.create_task(out.run())
    try:
        out.alarm(ev(0, "V1", 1))
        assert await out.drained()
        assert out.stats.alarms_at_risk == 1 and out.stats.alarms_replicated == 0
        [(gid, _)] = list(out._at_risk)
        assert await fan.has_alarm(gid)
        sentinel_set.kill(MASTER)
        await until(lambda: not port_open("127.0.0.1", MASTER, 0.1))
        out.alarm(ev(1, "V2", 2))
        await until(lambda: out.stats.degraded)
        sentinel_set.restart_master()
        await until(lambda: out.stats.alarms_republished == 1)
        assert await out.drained()
        entries = await fan.read_alarms("0-0")
        assert sorted(e.payload["id"] for e in entries) == [
            f"V1:speeding:{T0 + 1}",
            f"V2:speeding:{T0 + 2}",
        ]
        assert out.stats.alarms_at_risk == 2  # still no replica: both still at risk
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fan.close()


async def test_fanout_from_config_takes_the_limits() -> None:
    from store.config import LiveConfig

    live = LiveConfig(
        kind="redis",
        redis_url=f"redis+sentinel://127.0.0.1:{SENTINEL}/fleet/1",
        alarm_stream_maxlen=500,
        alarm_wait_replicas=1,
        alarm_wait_ms=50,
    )
    fan = Fanout.from_config(live)
    assert (fan.stream_maxlen, fan.wait_replicas, fan.wait_ms) == (500, 1, 50)
    assert fan.stream == "fw:live:alarms"
    await fan.close()


@pytest.mark.services
async def test_live_state_and_command_bus_through_sentinel(
    registry: Registry, sentinel_set: SentinelSet
) -> None:
    from fleet.batch import PositionBatch
    from store.config import LiveConfig
    from store.live import RedisLiveState
    from web.commands import RedisCommands

    url = f"redis+sentinel://127.0.0.1:{SENTINEL}/fleet/3"
    live = RedisLiveState(LiveConfig(kind="redis", redis_url=url, key_prefix="l:"))
    await live.open(registry)
    a, b = RedisCommands(url, "l:", node="a"), RedisCommands(url, "l:", node="b")
    heard: list[dict[str, Any]] = []

    async def hear(cmd: dict[str, Any]) -> None:
        heard.append(cmd)

    listener = asyncio.create_task(b.listen(hear))
    try:
        await live.update(
            PositionBatch.from_columns(
                vehicle=[0], ts=[T0], lat=[30.4], lon=[106.6], speed=[10.0], heading=[0]
            )
        )
        assert not live.degraded
        direct = redis_client(f"redis://127.0.0.1:{MASTER}/3")  # the data is on the master
        assert await direct.hexists("l:veh", "V1")
        await direct.aclose()
        await asyncio.wait_for(b.listening.wait(), 5)
        assert await a.publish("fences")
        await until(lambda: bool(heard))
        assert heard[0]["op"] == "fences" and heard[0]["node"] == "a"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        for c in (a, b):
            await c.close()
        await live.close()

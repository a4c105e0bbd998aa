"""Where each piece of the local cluster listens: one port plan from one base port.

Why a plan and not free ports: the bench, the test and ``deploy/local/cluster-up`` must agree
on the addresses (the configuration files written for the engine and web nodes name them),
and two clusters on one machine (the test and a bench) must not collide — each takes its own
``base`` inside the failover range 20000-21999.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NETNS_PREFIX", "SUBNET_PREFIX", "Layout"]

NETNS_PREFIX = "fwfo"  # network namespaces fwfo{base}-{i}: the partition fault's engine nodes
SUBNET_PREFIX = "10.231"  # veth pair i of a cluster: 10.231.{slot}.{4i+1}/30 (host) .{4i+2} (node)
MAX_NODES = 8  # engine or web nodes per cluster: the port plan reserves this many


@dataclass(frozen=True)
class Layout:
    """Ports from ``base`` (a multiple of 100 in 20000-21900)."""

    base: int = 20000

    def __post_init__(self) -> None:
        if not (20000 <= self.base <= 21900 and self.base % 100 == 0):
            raise ValueError("localcluster base must be a multiple of 100 in 20000..21900")

    @property
    def etcd_client(self) -> int:
        return self.base

    @property
    def etcd_peer(self) -> int:
        return self.base + 1

    @property
    def redis_master(self) -> int:
        return self.base + 10

    @property
    def redis_replica(self) -> int:
        return self.base + 11

    def sentinel(self, i: int) -> int:
        return self.base + 12 + i

    def pg(self, i: int) -> int:
        return self.base + 20 + i

    def patroni_rest(self, i: int) -> int:
        return self.base + 22 + i

    def nats_client(self, i: int) -> int:
        return self.base + 30 + i

    def nats_cluster(self, i: int) -> int:
        return self.base + 35 + i

    def nats_mqtt(self, i: int) -> int:
        return self.base + 40 + i

    def nats_monitor(self, i: int) -> int:
        return self.base + 45 + i

    @property
    def haproxy_web(self) -> int:
        return self.base + 50

    @property
    def haproxy_mqtt(self) -> int:
        return self.base + 51

    @property
    def haproxy_pg(self) -> int:
        return self.base + 52

    @property
    def haproxy_stats(self) -> int:
        return self.base + 53

    @property
    def mosquitto(self) -> int:
        return self.base + 55

    def engine_http(self, i: int) -> int:
        if not 0 <= i < MAX_NODES:
            raise ValueError(f"engine node {i} outside 0..{MAX_NODES - 1}")
        return self.base + 60 + i

    def web_http(self, i: int) -> int:
        if not 0 <= i < MAX_NODES:
            raise ValueError(f"web node {i} outside 0..{MAX_NODES - 1}")
        return self.base + 70 + i

    @property
    def slot(self) -> int:
        """The third octet of this cluster's veth subnets (one per base)."""
        return (self.base - 20000) // 100

    def netns(self, i: int) -> str:
        return f"{NETNS_PREFIX}{self.slot}-{i}"

    def veth_host_ip(self, i: int) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.{4 * i + 1}"

    def veth_node_ip(self, i: int) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.{4 * i + 2}"

    @property
    def client_net(self) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.0/24"

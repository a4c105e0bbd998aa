"""Partitions of the fleet and the cluster's settings (``[cluster]``).

A terminal belongs to partition ``crc32(terminal) % partitions``; whoever publishes its
positions (the JT/T 808 gateway, the simulator, a terminal speaking MQTT) prefixes the topic
with ``p{partition}/``, and the one engine node owning that partition subscribes to those
topics only. ``partitions = 0`` is the classic single engine: no prefix, one subscriber.

The function is the contract between publishers and engine nodes: change it and every
terminal lands in another partition, so it is pinned by a test with fixed vectors.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ClusterConfig", "partition_of", "partition_topic", "partitions_of"]

MAX_PARTITIONS = 256


def partition_of(terminal: str, partitions: int) -> int:
    """The partition of one terminal (its MQTT topic segment / JT/T 808 phone)."""
    if partitions <= 0:
        return 0
    return zlib.crc32(terminal.encode("utf-8")) % partitions


def partitions_of(terminals: list[str] | tuple[str, ...], partitions: int) -> npt.NDArray[np.int32]:
    """:func:`partition_of` for many terminals (the registry's column)."""
    return np.array([partition_of(t, partitions) for t in terminals], dtype=np.int32)


def partition_topic(topic: str, partition: int, partitions: int) -> str:
    """The topic (or filter) of ``partition``: ``p{partition}/`` + ``topic``; unchanged when the
    fleet is not partitioned."""
    if partitions <= 0:
        return topic
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} outside 0..{partitions - 1}")
    return f"p{partition}/{topic}"


class ClusterConfig(BaseModel):
    """Engine nodes owning partitions through etcd leases; web nodes behind a load balancer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int = Field(
        0,
        ge=0,
        le=MAX_PARTITIONS,
        description="fleet partitions (0: one engine, unprefixed topics); publishers prefix p{k}/",
    )
    etcd: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:2379"],
        description="etcd endpoints (partition ownership by lease)",
    )
    prefix: str = Field("/fleetwatch", description="etcd key prefix (one per deployment)")
    lease_ttl_s: int = Field(6, ge=2, le=60, description="etcd lease of an owner, seconds")
    renew_every_s: float = Field(1.0, gt=0, description="lease keep-alive interval")
    step_down_margin_s: float = Field(
        2.0,
        gt=0,
        description="an owner not renewed for lease_ttl_s - margin stops consuming (fencing)",
    )
    node: str = Field("", description="this node's name (empty: host name and process id)")

    @model_validator(mode="after")
    def _timing(self) -> ClusterConfig:
        if self.step_down_margin_s >= self.lease_ttl_s:
            raise ValueError("cluster.step_down_margin_s must be below cluster.lease_ttl_s")
        if self.renew_every_s * 2 > self.lease_ttl_s - self.step_down_margin_s:
            raise ValueError(
                "cluster.renew_every_s must allow two renewals before an owner steps down"
                " (2 × renew_every_s ≤ lease_ttl_s - step_down_margin_s)"
            )
        return self

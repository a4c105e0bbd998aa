"""The partition function is the contract between publishers and engine nodes."""

from __future__ import annotations

import zlib

import pytest
from pydantic import ValidationError

from fleet.cluster import ClusterConfig, partition_of, partition_topic, partitions_of


def test_partition_is_crc32_of_the_terminal() -> None:
    # fixed vectors: a change here moves every terminal to another partition
    assert zlib.crc32(b"13900000001") % 4 == partition_of("13900000001", 4)
    assert [partition_of(t, 4) for t in ("13900000001", "13900000002", "SIM0001")] == [
        zlib.crc32(t.encode()) % 4 for t in ("13900000001", "13900000002", "SIM0001")
    ]
    assert partition_of("anything", 0) == 0


def test_many_agree_with_one() -> None:
    terms = [f"1390000{i:04d}" for i in range(500)]
    got = partitions_of(terms, 7)
    assert got.tolist() == [partition_of(t, 7) for t in terms]
    assert set(got.tolist()) == set(range(7))  # every partition gets terminals


def test_topic_prefix() -> None:
    assert partition_topic("fleet/+/position", 2, 4) == "p2/fleet/+/position"
    assert partition_topic("fleet/+/position", 0, 0) == "fleet/+/position"
    with pytest.raises(ValueError, match="outside"):
        partition_topic("jt808/+/up", 4, 4)


def test_timing_is_checked() -> None:
    with pytest.raises(ValidationError, match="step_down_margin_s"):
        ClusterConfig(lease_ttl_s=2, step_down_margin_s=2.0)
    with pytest.raises(ValidationError, match="renew_every_s"):
        ClusterConfig(lease_ttl_s=4, step_down_margin_s=2.0, renew_every_s=1.5)
    ClusterConfig(lease_ttl_s=6, step_down_margin_s=2.0, renew_every_s=1.0)

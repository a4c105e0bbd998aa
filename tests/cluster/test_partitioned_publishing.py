"""Publishers put each terminal on its partition's topic; ``serve`` refuses a cluster."""

from __future__ import annotations

import pytest

from fleet.cluster import partition_of
from fleet.errors import ConfigError
from fleetwatch.config import Config
from fleetwatch.service import serve_forever
from simulator.mqtt import partitioned


def test_each_message_goes_to_its_terminals_partition() -> None:
    msgs = [(f"fleet/139{i:08d}/position", b"x") for i in range(50)]
    msgs.append(("jt808/013900000007/up", b"y"))
    out = partitioned(msgs, 4)
    for (topic, body), (new, same) in zip(msgs, out, strict=True):
        terminal = topic.split("/")[1]
        assert new == f"p{partition_of(terminal, 4)}/{topic}"
        assert same == body
    assert {t.split("/")[0] for t, _ in out} == {"p0", "p1", "p2", "p3"}


def test_unpartitioned_and_prefixed_topics() -> None:
    msgs = [("fleet/13900000001/position", b"x")]
    assert partitioned(msgs, 0) == msgs
    k = partition_of("13900000001", 3)
    assert partitioned([("sim/" + msgs[0][0], b"x")], 3, "sim/") == [
        (f"sim/p{k}/fleet/13900000001/position", b"x")
    ]


def test_serve_says_what_to_run_for_a_cluster() -> None:
    cfg = Config.model_validate({"cluster": {"partitions": 4}})
    with pytest.raises(ConfigError, match=r"fleetwatch engine .*fleetwatch web"):
        serve_forever(cfg)

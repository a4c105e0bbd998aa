"""The ingest core: flush by size or age, dead letters kept, neighbours never dropped."""

from __future__ import annotations

import orjson

from fleet.registry import Registry
from fleetwatch.config import parse_config
from ingest.core import IngestCore, topic_kind
from ingest.json_codec import JsonLimits

NOW = 1_764_034_200_000


def registry(n: int = 3) -> Registry:
    cfg = parse_config(
        {
            "orgs": [{"id": "c", "name": "City"}],
            "vehicles": [
                {"id": f"v{i}", "plate": f"川X{i:05d}", "terminal": f"1390000000{i}", "org": "c"}
                for i in range(n)
            ],
        }
    )
    return Registry.from_config(cfg)


def core(max_rows: int = 100, max_age_ms: int = 50) -> IngestCore:
    return IngestCore(registry(), limits=JsonLimits(), max_rows=max_rows, max_age_ms=max_age_ms)


def msg(i: int, ts: int = NOW) -> tuple[str, bytes]:
    return f"fleet/1390000000{i}/position", orjson.dumps({"ts": ts, "lat": 30.0, "lon": 106.0})


def test_topic_kinds() -> None:
    assert topic_kind("fleet/139/position") == ("json", "139")
    assert topic_kind("shard3/fleet/139/position") == ("json", "139")
    assert topic_kind("jt808/013800138000/up") == ("jt808", "013800138000")
    assert topic_kind("fleet//position") is None
    assert topic_kind("other/x") is None


def test_flush_by_size() -> None:
    c = core(max_rows=3, max_age_ms=10_000)
    for i in range(2):
        c.add(*msg(i), NOW, ack=(1, i + 1))
    assert not c.due(NOW)
    c.add(*msg(2), NOW, ack=(1, 3))
    assert c.due(NOW)
    f = c.flush()
    assert len(f.batch) == 3 and f.acks == [(1, 1), (1, 2), (1, 3)] and f.messages == 3
    assert not c.pending and not c.due(NOW + 10**9)


def test_flush_by_age() -> None:
    c = core(max_rows=1000, max_age_ms=50)
    c.add(*msg(0), NOW)
    assert not c.due(NOW + 49)
    assert c.due(NOW + 50)


def test_bad_messages_become_dead_letters_and_keep_neighbours() -> None:
    c = core()
    c.add(*msg(0), NOW, ack=(1, 1))
    c.add("fleet/13900000001/position", b"{broken", NOW, ack=(1, 2))
    c.add("fleet/99999999999/position", orjson.dumps({"ts": NOW, "lat": 1, "lon": 2}), NOW)
    c.add("weird/topic", b"{}", NOW)
    c.add(*msg(2), NOW, ack=(1, 5))
    f = c.flush()
    assert f.batch.vehicle.tolist() == [0, 2]
    assert sorted(d.reason for d in f.dead_letters) == [
        "invalid_json",
        "unknown_terminal",
        "unknown_topic",
    ]
    assert f.dead_letters[0].payload == b"{broken"
    # Dead letters are acknowledged too, once written: nothing is redelivered forever.
    assert f.acks == [(1, 1), (1, 2), (1, 5)]
    assert c.rejected["invalid_json"] == 1


def test_jt808_without_decoder_is_dead_lettered() -> None:
    c = core()
    c.add("jt808/013900000000/up", b"\x7e\x00\x7e", NOW)
    f = c.flush()
    assert [d.reason for d in f.dead_letters] == ["jt808_disabled"]

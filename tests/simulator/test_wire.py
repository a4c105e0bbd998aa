"""Reports as JSON and as JT/T 808 frames, checked by decoding them back."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import orjson

from ingest.jt808.codec import decode_frame
from ingest.jt808.messages import Location, LocationBatch
from simulator.fleet import Fleet, terminal_id
from simulator.run import DEFAULT_SCENARIO, _day_start
from simulator.wire import json_messages, jt808_messages

DAY0 = _day_start(dt.date(2026, 11, 24))


def day_columns() -> dict[str, np.ndarray]:
    # no orders: every vehicle without a violation loses its signal on its trip
    spec = replace(DEFAULT_SCENARIO, vehicles=10, signal_loss_share=1.0, ordered_orgs=0)
    f = Fleet(spec, DAY0)
    return f.step(DAY0 + 86_400_000)


def test_json_one_object_per_report_an_array_per_blind_area() -> None:
    cols = day_columns()
    msgs = json_messages(cols, "p/")
    arrays = [orjson.loads(b) for _, b in msgs if b.startswith(b"[")]
    assert arrays and all(len(a) >= 2 for a in arrays)
    assert sum(len(a) for a in arrays) == int(cols["backfill"].sum())
    topic, body = msgs[0]
    assert topic == f"p/fleet/{terminal_id(int(cols['vehicle'][0]))}/position"
    first = orjson.loads(body)
    assert first["ts"] == int(cols["ts"][0])
    assert {"lat", "lon", "speed", "acc", "alarm", "status", "mileage"} <= first.keys()


def test_jt808_frames_decode_to_the_same_positions() -> None:
    cols = day_columns()
    serials: dict[int, int] = {}
    msgs = jt808_messages(cols, serials)
    got = []
    batches = 0
    for topic, frame in msgs:
        d = decode_frame(frame)
        assert topic == f"jt808/{d.header.phone.lstrip('0')}/up"
        if isinstance(d.message, LocationBatch):
            assert d.message.backfill
            batches += 1
            got += list(d.message.locations)
        else:
            assert isinstance(d.message, Location)
            got.append(d.message)
    assert batches > 0 and len(got) == len(cols["ts"])
    assert [g.time_ms for g in got] == [int(t) // 1000 * 1000 for t in cols["ts"]]
    assert np.allclose([g.lat for g in got], cols["lat"], atol=1e-6)
    assert np.allclose([g.speed_kmh for g in got], cols["speed"], atol=0.11)
    assert [g.alarm for g in got] == cols["alarm"].tolist()
    assert max(serials.values()) > 100

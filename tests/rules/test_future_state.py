"""One impossible timestamp must never blind a vehicle (issue 12, item 1).

The rules engine trusts batch order: a position not newer than the vehicle's last
one is late and raises no live alarm. So nothing may give the engine a last point
in the future: ingest refuses such positions (whatever the codec), and state saved
by an older version with one is repaired when it is loaded.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.batch import PositionBatch
from fleet.registry import Registry
from ingest.core import IngestCore
from ingest.json_codec import JsonLimits
from ingest.jt808.codec import encode_location
from ingest.jt808.position import decode_position_payloads
from rules.config import RulesConfig
from rules.engine import RulesEngine
from tests.rules.conftest import local_ms, make_fences, make_registry

WED = (2026, 11, 25)
NOW = local_ms(*WED, 10)
YEAR_2098 = local_ms(2098, 3, 1, 10)
FENCES = make_fences()
TOWN = (106.70, 30.70)
MAX_FUTURE_MS = 600_000


def engine(registry: Registry | None = None) -> RulesEngine:
    return RulesEngine(RulesConfig(), registry or make_registry(3), fences=lambda: FENCES)


def points(v: int, start: int, n: int, speed: float, every_s: int = 5) -> PositionBatch:
    return PositionBatch.from_columns(
        vehicle=[v] * n,
        ts=[start + i * every_s * 1000 for i in range(n)],
        lat=[TOWN[1]] * n,
        lon=[TOWN[0] + i * 1e-4 for i in range(n)],
        speed=[speed] * n,
        acc=[True] * n,
    )


def blinded_engine() -> RulesEngine:
    """An engine whose v0 took a 2098 point, as an older version let through."""
    eng = engine()
    eng.process(points(0, NOW - 60_000, 3, 40.0))
    eng.process(points(0, YEAR_2098, 1, 40.0))
    return eng


def test_a_2098_point_in_saved_state_is_repaired_on_restore() -> None:
    old = blinded_engine()
    # Blind, as the issue found it: 130 km/h for 30 s raises nothing.
    live = [e for e in old.process(points(0, NOW, 7, 130.0)) if not e.backfill]
    assert [e for e in live if e.kind == "speeding"] == []
    restarted = engine()
    restarted.restore(old.state_bytes())
    repaired, closes = restarted.repair_future(NOW, MAX_FUTURE_MS)
    assert repaired == ["v0"]
    assert all(e.action == "close" and e.detail["closed_by_repair"] for e in closes)
    assert int(restarted.state.last_ts[0]) < NOW
    events = restarted.process(points(0, NOW + 60_000, 7, 130.0))
    assert [(e.kind, e.action) for e in events if e.kind == "speeding"] == [("speeding", "open")]


def test_repair_closes_the_episodes_a_future_point_left_open() -> None:
    eng = engine()
    # A parked car's offline episode, then a 2098 point closes it and tick() runs again.
    eng.process(points(1, NOW - 3_600_000, 2, 0.0))
    opened = eng.tick(NOW - 1_000_000)
    assert [e.kind for e in opened] == ["offline"]
    eng.process(points(1, YEAR_2098, 1, 0.0))
    eng.process(points(1, YEAR_2098 + 5_000, 7, 130.0))  # speeding opened in 2098
    assert any(k == "speeding" for _, k in eng.book.open)
    _, closes = eng.repair_future(NOW, MAX_FUTURE_MS)
    assert {e.kind for e in closes} == {"speeding"}
    assert not eng.book.open
    assert all(e.ended_at is not None and e.ended_at >= e.started_at for e in closes)


def test_sound_state_is_left_alone() -> None:
    eng = engine()
    eng.process(points(0, NOW - 60_000, 7, 130.0))
    before = eng.state_bytes()
    assert eng.repair_future(NOW, MAX_FUTURE_MS) == ([], [])
    assert eng.state_bytes() == before


# -- the property: through the real ingest core, whatever arrives ----------------------------

TERMINALS = [f"1380000{i:04d}" for i in range(3)]

position = st.fixed_dictionaries(
    {
        "vehicle": st.integers(0, 2),
        "codec": st.sampled_from(["json", "jt808"]),
        # From 2000 to 2099 (the BCD year of JT/T 808): mostly near now, some anywhere.
        "ts": st.one_of(
            st.integers(NOW - 3_600_000, NOW + 2 * MAX_FUTURE_MS),
            st.integers(local_ms(2000, 1, 2), local_ms(2099, 12, 31)),
        ),
        "speed": st.floats(0, 200),
        "backfill": st.booleans(),
    }
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(position, max_size=6), max_size=5), st.integers(0, 3_600_000))
def test_no_input_moves_a_last_point_beyond_now_plus_max_future(
    flushes: list[list[dict[str, object]]], step_ms: int
) -> None:
    registry = make_registry(3)
    eng = engine(registry)
    core = IngestCore(
        registry,
        limits=JsonLimits(max_future_ms=MAX_FUTURE_MS),
        max_rows=1000,
        max_age_ms=50,
        jt808_decoder=lambda p: decode_position_payloads(p),
    )
    now = NOW
    for items in flushes:
        for it in items:
            terminal = TERMINALS[int(it["vehicle"])]  # type: ignore[call-overload]
            ts = int(it["ts"])  # type: ignore[call-overload]
            if it["codec"] == "json":
                body = (
                    f'{{"ts": {ts}, "lat": 30.7, "lon": 106.7, "speed": {it["speed"]}}}'
                ).encode()
                core.add(f"fleet/{terminal}/position", body, now)
            else:
                phone = terminal.zfill(12)
                frame = encode_location(
                    phone,
                    1,
                    lat=30.7,
                    lon=106.7,
                    speed_kmh=round(float(it["speed"]), 1),  # type: ignore[arg-type]
                    heading=0,
                    alt_m=0,
                    time_ms=ts // 1000 * 1000,
                )
                core.add(f"jt808/{phone}/up", frame, now)
        flush = core.flush()
        eng.process(flush.batch)
        eng.tick(now)
        seen = eng.state.last_ts[eng.state.last_ts != np.iinfo(np.int64).min]
        assert (seen <= now + MAX_FUTURE_MS).all()
        now += step_ms

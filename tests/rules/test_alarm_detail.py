"""What the alarm desk reads from an episode (CONTRACTS.md, "Alarm objects"; issue 12).

Speeding carries ``max_speed_kmh`` and ``limit_kmh``; the fence-based kinds carry
``fence_name``; SOS, collision and rollover are critical by default.
"""

from __future__ import annotations

from rules.config import ALARM_BITS, RulesConfig
from tests.rules.conftest import local_ms
from tests.rules.test_scenarios import KTV, OUT, WED, batch, engine, of, trip


def test_speeding_detail_has_max_speed_and_limit() -> None:
    t = local_ms(*WED, 10)
    ev = engine().process(
        batch(
            trip(0, t, 0.5, speed=95, every_s=5),
            trip(0, t + 35_000, 0.25, speed=124, every_s=5),
            trip(0, t + 55_000, 1, speed=50, every_s=5),
        )
    )
    sp = of(ev, "speeding")
    assert sp[0].detail["limit_kmh"] == 80.0 and sp[0].detail["max_speed_kmh"] == 95.0
    assert sp[-1].action == "close" and sp[-1].detail["max_speed_kmh"] == 124.0


def test_fence_kinds_name_their_fence() -> None:
    t = local_ms(*WED, 15)
    ev = engine().process(
        batch(
            trip(1, t, 5),
            trip(1, t + 6 * 60_000, 10, at=KTV, move=False),
            trip(1, t + 1_200_000, 5),
        )
    )
    assert {e.detail["fence_name"] for e in of(ev, "forbidden_zone")} == {"某KTV"}
    ev = engine().process(
        batch(
            trip(0, local_ms(*WED, 9), 10),
            trip(0, local_ms(*WED, 9, 11), 30, at=OUT, every_s=60),
            trip(0, local_ms(*WED, 9, 45), 5),
        )
    )
    assert {e.detail["fence_name"] for e in of(ev, "out_of_area")} == {"广安市"}
    night = local_ms(*WED, 22, 30)
    ev = engine().process(batch(trip(0, night, 60, speed=0, acc=False, move=False)))
    (pk,) = of(ev, "parking_violation")
    assert pk.detail["fence_name"] == "财政局停车场"  # where it should have parked


def test_sos_collision_and_rollover_are_critical_by_default() -> None:
    cfg = RulesConfig()
    assert set(cfg.terminal_alarm.critical) == {"sos", "collision", "rollover"}
    # JT/T 808-2019 table 24: bit 0 紧急报警, bit 29 碰撞预警, bit 30 侧翻预警.
    assert (ALARM_BITS["sos"], ALARM_BITS["collision"], ALARM_BITS["rollover"]) == (0, 29, 30)
    t = local_ms(*WED, 10)
    bits = 1 | (1 << 29) | (1 << 30) | (1 << 8)  # and power_cut, a warning
    ev = engine().process(batch(trip(0, t, 1, alarm=bits)))
    severity = {e.detail["name"]: e.severity for e in of(ev, "terminal_alarm")}
    assert severity == {
        "sos": "critical",
        "collision": "critical",
        "rollover": "critical",
        "power_cut": "warning",
    }

"""Closing an episode by hand: the close event, and the rule starting afresh afterwards."""

from __future__ import annotations

from rules.config import RulesConfig
from tests.rules.conftest import local_ms
from tests.rules.test_scenarios import WED, batch, engine, of, trip


def test_close_by_hand_emits_close_and_reopens_only_after_the_debounce() -> None:
    cfg = RulesConfig.model_validate({"speeding": {"min_duration_s": 10, "close_after_s": 30}})
    eng = engine(cfg)
    t = local_ms(*WED, 10)
    opened = of(eng.process(batch(trip(0, t, 0.5, speed=95, every_s=5))), "speeding")
    assert [e.action for e in opened] == ["open"]
    ep = opened[0].id

    closed = eng.close_episode(ep, t + 31_000)
    assert [(e.id, e.action) for e in closed] == [(ep, "close")]
    ev = closed[0]
    assert ev.ended_at == t + 31_000 and ev.detail["closed_by_hand"] is True
    assert ev.detail["duration_s"] == 31.0
    assert eng.open_episodes() == []
    assert eng.close_episode(ep, t + 32_000) == []  # already closed: nothing
    assert eng.close_episode("nope", t + 32_000) == []

    # still speeding: 5 s is under the debounce, so nothing yet ...
    first = eng.process(batch(trip(0, t + 35_000, 5 / 60, speed=96, every_s=5)))
    assert of(first, "speeding") == []
    # ... and a new episode (new id) once the condition has lasted min_duration_s again
    again = of(eng.process(batch(trip(0, t + 45_000, 0.25, speed=97, every_s=5))), "speeding")
    assert [e.action for e in again] == ["open"]
    assert again[0].id != ep and again[0].started_at == t + 35_000


def test_close_by_hand_then_the_rule_closes_nothing_twice() -> None:
    eng = engine()
    t = local_ms(*WED, 10)
    ep = of(eng.process(batch(trip(0, t, 0.5, speed=95, every_s=5))), "speeding")[0].id
    eng.close_episode(ep, t + 40_000)
    # back under the limit for long: the machine was reset, so no second close
    assert of(eng.process(batch(trip(0, t + 45_000, 2, speed=40, every_s=5))), "speeding") == []


def test_close_offline_by_hand() -> None:
    eng = engine()
    t = local_ms(*WED, 10)
    eng.process(batch(trip(0, t, 1)))
    last = t + 60_000
    opened = eng.tick(last + 30 * 60_000)
    assert [e.kind for e in opened] == ["offline"]
    closed = eng.close_episode(opened[0].id, last + 31 * 60_000)
    assert [e.action for e in closed] == ["close"]
    # the vehicle reports again: no close for an episode already closed by hand
    assert of(eng.process(batch(trip(0, last + 32 * 60_000, 1))), "offline") == []


def test_state_survives_save_and_restore_after_a_close_by_hand() -> None:
    eng = engine()
    t = local_ms(*WED, 10)
    ep = of(eng.process(batch(trip(0, t, 0.5, speed=95, every_s=5))), "speeding")[0].id
    eng.close_episode(ep, t + 40_000)
    other = engine()
    other.restore(eng.state_bytes())
    assert other.open_episodes() == []
    assert of(other.process(batch(trip(0, t + 45_000, 1, speed=40, every_s=5))), "speeding") == []

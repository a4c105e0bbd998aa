"""The pure core: which routes an event goes to, when, and how storms fold into digests."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import ConfigError
from fleet.registry import Registry
from notify.config import NotifyConfig
from notify.routing import Router, StormGate, backoff_ms, quiet_until
from tests.notify.conftest import T0, event

TZ = "Asia/Shanghai"


def local_ms(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)


def config(**route: object) -> NotifyConfig:
    base: dict[str, object] = {"name": "duty", "channels": ["hook", "mail"]}
    base.update(route)
    return NotifyConfig.model_validate(
        {
            "channels": [
                {"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/x"},
                {"type": "email", "name": "mail", "sender": "fw@x.cn", "to": ["a@x.cn"]},
                {"type": "wecom", "name": "boss", "url": "http://127.0.0.1:9/w"},
            ],
            "routes": [base, {"name": "leaders", "channels": ["boss"], "escalation_only": True}],
        }
    )


def test_open_and_close_one_message_per_channel_update_and_backfill_none(
    registry: Registry,
) -> None:
    r = Router(config(), registry, timezone=TZ, public_url="https://fw.example.cn/")
    evs = [
        event(registry, 0, action="open"),
        event(registry, 0, action="update", ts=T0 + 5000),
        event(registry, 0, action="update", ts=T0 + 9000),
        event(registry, 0, action="close", ts=T0 + 60_000),
        event(registry, 1, action="open", backfill=True),
    ]
    out = r.plan(evs)
    assert [(e.purpose, e.channel) for e in out] == [
        ("open", "hook"),
        ("open", "mail"),
        ("close", "hook"),
        ("close", "mail"),
    ]
    assert out[0].notice.plate == "川X00000" and out[0].notice.org_name == "前锋区"
    assert out[0].notice.link == "https://fw.example.cn/#alarm/veh000:speeding:1764034200000"
    assert out[0].due_at == T0 and out[2].due_at == T0 + 60_000
    # Deterministic: planning the same events again gives the same keys.
    assert [e.key for e in r.plan(evs)] == [e.key for e in out]


def test_org_subtree_kind_and_severity(registry: Registry) -> None:
    r = Router(
        config(orgs=["qx"], kinds=["speeding", "fatigue"], min_severity="warning"),
        registry,
        timezone=TZ,
    )
    # vehicle 0: qx; 2: qx_jj (below qx); 1: ws; 3: city (above qx)
    assert r.plan([event(registry, 0)])
    assert r.plan([event(registry, 2)])
    assert not r.plan([event(registry, 1)])
    assert not r.plan([event(registry, 3)])
    assert not r.plan([event(registry, 0, kind="off_hours")])
    assert not r.plan([event(registry, 0, severity="info")])
    assert r.plan([event(registry, 0, kind="fatigue", severity="critical")])


def test_unknown_org_is_a_config_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"notify.routes\[0\].orgs\[0\]"):
        Router(config(orgs=["nowhere"]), registry)


def test_on_close_false(registry: Registry) -> None:
    r = Router(config(on_close=False), registry)
    assert not r.plan([event(registry, 0, action="close", ts=T0 + 1000)])


def test_quiet_hours_defer_drop_and_bypass(registry: Registry) -> None:
    night = local_ms(2026, 11, 25, 23, 10)
    morning = local_ms(2026, 11, 26, 7, 0)
    defer = Router(config(quiet_hours="22:00-07:00"), registry, timezone=TZ)
    out = defer.plan([event(registry, 0, started_at=night)])
    assert out and all(e.due_at == morning and e.created_at == night for e in out)
    day = local_ms(2026, 11, 25, 12, 0)
    assert defer.plan([event(registry, 0, started_at=day)])[0].due_at == day
    drop = Router(config(quiet_hours="22:00-07:00", quiet_action="drop"), registry, timezone=TZ)
    assert not drop.plan([event(registry, 0, started_at=night)])
    # critical alarms ignore quiet hours by default
    crit = drop.plan([event(registry, 0, started_at=night, severity="critical")])
    assert crit and crit[0].due_at == night


def test_quiet_until() -> None:
    w = "22:00-07:00"
    assert quiet_until(local_ms(2026, 11, 25, 21, 59), w, TZ) is None
    assert quiet_until(local_ms(2026, 11, 25, 22, 0), w, TZ) == local_ms(2026, 11, 26, 7, 0)
    assert quiet_until(local_ms(2026, 11, 26, 3, 0), w, TZ) == local_ms(2026, 11, 26, 7, 0)
    assert quiet_until(local_ms(2026, 11, 26, 7, 0), w, TZ) is None
    assert quiet_until(local_ms(2026, 11, 26, 12, 30), "12:00-14:00", TZ) == local_ms(
        2026, 11, 26, 14, 0
    )
    assert quiet_until(local_ms(2026, 11, 26, 23, 30), "18:00-24:00", TZ) == local_ms(
        2026, 11, 27, 0, 0
    )
    assert quiet_until(T0, None, TZ) is None


def test_escalation_entry_due_after_the_delay(registry: Registry) -> None:
    r = Router(config(escalate_to="leaders", escalate_after_s=600), registry, timezone=TZ)
    out = r.plan([event(registry, 0)])
    esc = [e for e in out if e.purpose == "escalate"]
    assert len(esc) == 1
    assert esc[0].route == "leaders" and esc[0].channel == "boss"
    assert esc[0].due_at == T0 + 600_000
    assert esc[0].notice.route == "duty" and esc[0].notice.escalate_after_s == 600
    # close never escalates; escalation-only routes receive nothing directly
    assert all(e.route == "duty" for e in r.plan([event(registry, 0, action="close")]))


def test_storm_gate() -> None:
    g = StormGate(per_minute=3)
    d = g.decide(0, 2)
    assert d.single == (0, 1) and not d.digest
    d = g.decide(1000, 5)  # one more fits; the other four become a digest
    assert d.single == (0,) and d.digest == (1, 2, 3, 4)
    d = g.decide(2000, 2)  # within the minute of the digest: held until it is over
    assert d.deferred == (0, 1) and d.defer_until == 61_000
    d = g.decide(61_000, 6)  # the storm goes on: a new minute, a new digest
    assert d.single == (0, 1, 2) and d.digest == (3, 4, 5)
    d = g.decide(200_000, 4)  # calm again; one over the limit is not worth a digest
    assert d.single == (0, 1, 2, 3) and not d.digest


@given(
    attempt=st.integers(1, 200),
    initial=st.floats(0.01, 100),
    cap=st.floats(0.01, 10_000),
    u=st.floats(0, 1, exclude_max=True),
)
def test_backoff_bounds(attempt: int, initial: float, cap: float, u: float) -> None:
    cap = max(cap, initial)
    d = min(cap, initial * 2.0 ** min(attempt - 1, 60))
    ms = backoff_ms(attempt, initial, cap, u)
    assert int(1000 * d / 2) - 1 <= ms <= int(1000 * d) + 1


def test_backoff_grows() -> None:
    assert [backoff_ms(a, 1, 60, 0.0) for a in (1, 2, 3, 4, 10)] == [500, 1000, 2000, 4000, 30000]


def test_messages_name_the_place_by_the_fences_in_force(registry: Registry) -> None:
    from geofence.boundaries import districts
    from geofence.fence import Fence
    from geofence.index import LiveFences
    from geofence.places import Gazetteer
    from notify.message import detail_text, notice_text

    ktv = Fence.circle("ktv-7", "某KTV", "city", "forbidden", (106.633, 30.456), 150.0)
    live = LiveFences()
    router = Router(config(), registry, timezone=TZ, fences=lambda: live.index)
    e = event(registry, 0, "forbidden_zone", detail={"fence": "ktv-7", "fence_name": "某KTV"})
    before = router.plan([e])[0].notice.place
    assert before and "某KTV" not in before  # no fences yet: the district alone
    live.replace_all([ktv])
    n = router.plan([e])[0].notice
    want = Gazetteer.build(districts(), [ktv]).texts([e.lon], [e.lat])[0]
    assert n.place == want and "某KTV" in n.place
    text = notice_text(n)
    assert n.place in text
    assert "区域 某KTV" in detail_text("forbidden_zone", n.detail)
    assert "ktv-7" not in text
    # a fence without a name (older detail) still shows its id
    assert detail_text("forbidden_zone", {"fence": "ktv-7"}) == "区域 ktv-7"

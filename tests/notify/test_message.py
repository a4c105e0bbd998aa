"""The Chinese message text."""

from __future__ import annotations

from fleet.registry import Registry
from notify.config import NotifyConfig
from notify.message import (
    KIND_NAMES,
    Notice,
    detail_text,
    digest_markdown,
    notice_markdown,
    notice_subject,
    notice_text,
)
from notify.routing import Router
from rules.events import KINDS
from tests.notify.conftest import T0, event


def test_every_kind_has_a_chinese_name() -> None:
    assert set(KIND_NAMES) == set(KINDS)
    assert KIND_NAMES["off_hours"] == "非工作时间用车"


def test_open_message(registry: Registry) -> None:
    r = Router(NotifyConfig(), registry, public_url="http://fw.local:8080")
    n = r.notice(event(registry, 2), "open", "duty")
    md = notice_markdown(n)
    assert "【报警】超速 川X00002（前锋区纪委）" in md
    assert "2025-11-25 09:30:00" in md  # Asia/Shanghai, not UTC
    assert "30.45600, 106.63300" in md
    assert "限速 80 km/h" in md and "最高 97.5 km/h" in md
    assert "(http://fw.local:8080/#alarm/veh002:speeding:1764034200000)" in md
    assert Notice.from_json(n.to_json()) == n


def test_close_and_escalate(registry: Registry) -> None:
    r = Router(NotifyConfig(), registry)
    e = event(
        registry,
        1,
        kind="off_hours",
        action="close",
        ts=T0 + 312_000,
        detail={"reason": "rest_day", "holiday": "国庆节", "duration_s": 312.0},
    )
    n = r.notice(e, "close", "duty")
    assert notice_subject(n).startswith("【报警解除】非工作时间用车")
    text = notice_text(n)
    assert "结束：2025-11-25 09:35:12" in text and "持续 5 分 12 秒" in text
    assert "休息日" in text and "国庆节" in text
    esc = Notice.from_json({**n.to_json(), "purpose": "escalate", "escalate_after_s": 600})
    assert "10 分钟内无人确认处理" in notice_markdown(esc)


def test_digest_lists_a_bounded_number(registry: Registry) -> None:
    r = Router(NotifyConfig(), registry)
    ns = [r.notice(event(registry, i % 12, started_at=T0 + i), "open", "duty") for i in range(30)]
    md = digest_markdown(ns, 20, "http://x/#alarms")
    assert md.startswith("### 【报警汇总】30 条报警消息")
    assert md.count("\n- ") == 21 and "另有 10 条" in md


def test_detail_text_ignores_unknown_keys() -> None:
    assert detail_text("terminal_alarm", {"name": "sos", "bit": 0}) == "紧急报警"
    assert detail_text("forbidden_zone", {"fence": "某景区"}) == "区域 某景区"
    assert detail_text("offline", {"whatever": 1}) == ""


def test_message_names_the_place(registry: Registry) -> None:
    """位置 says where in words: the place queued with the notice, else the district."""
    import dataclasses

    r = Router(NotifyConfig(), registry)
    n = r.notice(event(registry, 2), "open", "duty")  # 30.456, 106.633: 广安区
    assert "位置：广安区（30.45600, 106.63300）" in notice_text(n)
    named = dataclasses.replace(n, place="武胜县 · 距 某KTV 300 米")
    assert "- 位置：武胜县 · 距 某KTV 300 米（30.45600, 106.63300）" in notice_markdown(named)
    assert Notice.from_json(named.to_json()) == named
    far = dataclasses.replace(n, lat=39.9, lon=116.4)
    assert "位置：广安市外（39.90000, 116.40000）" in notice_text(far)

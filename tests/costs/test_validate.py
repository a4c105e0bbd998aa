"""Row validation: every bad row has a line and a reason; fingerprints ignore header names."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from costs.kinds import FIELDS, ColumnMapping, header_keys, template_rows
from costs.validate import validate_rows

NOW = int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp() * 1000)


@dataclass
class V:
    id: str
    plate: str
    org: str = "o"
    fuel_card: str | None = None


CARS = [V("a", "川X10001", fuel_card="C1"), V("b", "川X10002")]


def run(kind: str, rows: list[dict[str, object]], mapping: ColumnMapping | None = None):
    rows = [{"_line": n, **r} for n, r in enumerate(rows, start=2)]
    return validate_rows(kind, rows, CARS, mapping=mapping, now_ms=NOW, tz="Asia/Shanghai")


def fuel(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "加油卡号": "C1",
        "车牌号": "川X10001",
        "加油站": "s",
        "交易时间": "2026-11-03 08:15",
        "加油量(升)": 40,
        "金额(元)": 300,
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (fuel(**{"加油量(升)": 0}), "加油量: 0 升不可能"),
        (fuel(**{"加油量(升)": 900, "金额(元)": 2900}), "加油量: 900 升不可能"),
        (fuel(**{"金额(元)": 30000}), "超过单笔燃油费上限"),
        (fuel(**{"金额(元)": 30}), "单价 0.75 元/升不可能"),
        (fuel(**{"交易时间": "2027-01-05 08:00"}), "晚于导入时间"),
        (fuel(**{"交易时间": "11/03 8点"}), "时间格式不对"),
        (fuel(**{"金额(元)": "三百"}), "金额(元): 应为数字"),
        (fuel(**{"车牌号": ""}), "车牌号: 必填"),
        (fuel(**{"加油卡号": "C9"}), "加油卡号 C9 未登记"),
        (fuel(**{"加油站纬度": 30.1}), "纬度和经度应同时填写"),
    ],
)
def test_bad_fuel_rows_say_why(row: dict[str, object], reason: str) -> None:
    plan = run("fuel", [fuel(), row])
    assert len(plan.items) == 1 and [b.line for b in plan.bad] == [3]
    assert reason in plan.bad[0].reason


def test_xlsx_cells_and_a_suppliers_headers_give_the_same_fingerprint() -> None:
    ours = run("fuel", [fuel(**{"交易时间": dt.datetime(2026, 11, 3, 8, 15), "加油量(升)": 40.0})])
    m = ColumnMapping(
        "zsy",
        "fuel",
        {
            "卡号": "card",
            "车号": "plate",
            "网点": "station",
            "时间": "time",
            "升数": "litres",
            "金额": "amount",
        },
    )
    theirs = run(
        "fuel",
        [
            {
                "卡号": "c1",
                "车号": "川x10001",
                "网点": "s",
                "时间": "2026/11/03 08:15",
                "升数": "40",
                "金额": "300.00",
            }
        ],
        mapping=m,
    )
    assert ours.items[0].fingerprint == theirs.items[0].fingerprint
    assert theirs.items[0].vehicle == "a"


def test_headers_are_checked_before_any_row() -> None:
    with pytest.raises(ValueError, match="缺少必填列: 金额"):
        header_keys("toll", ["车牌号", "通行时间", "收费站"], None)
    with pytest.raises(ValueError, match="未知的列 'x'"):
        header_keys("toll", ["车牌号", "x"], None)
    with pytest.raises(ValueError, match="都对应字段"):
        header_keys("toll", ["车牌号", "plate"], None)
    for kind in FIELDS:
        heads, _ = template_rows(kind)
        assert header_keys(kind, heads, None)  # the template imports as it is


def test_insurance_and_repair_rules() -> None:
    ins = {
        "车牌号": "川X10002",
        "保险公司": "人保",
        "起保日期": "2026-11-01",
        "终保日期": "2027-10-31",
        "保费(元)": 4200,
    }
    plan = run(
        "insurance", [ins, {**ins, "终保日期": "2026-10-01"}, {**ins, "终保日期": "2031-01-01"}]
    )
    assert len(plan.items) == 1
    assert [b.reason for b in plan.bad] == ["终保日期应晚于起保日期", "保险期间超过 3 年"]
    rep = {
        "车牌号": "川X10002",
        "维修厂": "m",
        "维修日期": "2026-11-12",
        "金额(元)": 500,
        "材料费(元)": 380,
        "工时费(元)": 120,
        "里程表读数(公里)": 45210,
    }
    plan = run(
        "repair",
        [
            rep,
            {**rep, "材料费(元)": -1, "工时费(元)": 501},
            {**rep, "里程表读数(公里)": -3, "维修日期": "2026-11-13"},
        ],
    )
    assert len(plan.items) == 1
    assert "材料费: 不能为负数" in plan.bad[0].reason and "里程表读数" in plan.bad[1].reason

"""The 报警记录 export table: Chinese headers, local times, the whole handling record."""

from __future__ import annotations

import csv
import io

import openpyxl

from web.export import ALARM_COLUMNS, alarm_table, to_csv, to_xlsx

T0 = 1_764_034_200_000  # 2025-11-25 09:30 +08:00

ALARM = {
    "id": "v00007:terminal_alarm.sos:1764034200000",
    "vehicle": "v00007",
    "plate": "川X00007",
    "org": "ga-ws",
    "kind": "terminal_alarm",
    "severity": "critical",
    "state": "closed",
    "started_at": T0,
    "ended_at": T0 + 95_000,
    "lat": 30.35,
    "lon": 106.22,
    "detail": {"name": "sos"},
    "covered": False,
    "place": "武胜县 · 距 某KTV 300 米",
    "ack": {"user": "ws-op", "note": "已电话联系", "at": T0 + 60_000, "handled": False},
    "acks": [
        {"user": "ws-op", "note": "已电话联系", "at": T0 + 60_000, "action": "ack"},
        {"user": "ws-op", "note": "", "at": T0 + 90_000, "action": "note"},
        {"user": "admin", "note": "误报", "at": T0 + 95_000, "action": "close"},
    ],
}


def test_chinese_row_with_the_handling_record() -> None:
    headers, [row] = alarm_table([ALARM], tz="Asia/Shanghai", org_names={"ga-ws": "武胜县"})
    r = dict(zip(headers, row, strict=True))
    assert headers == [zh for _, zh, _ in ALARM_COLUMNS]
    assert r["单位"] == "武胜县" and r["报警类型"] == "终端报警" and r["级别"] == "紧急"
    assert r["状态"] == "已结束" and r["开始时间"] == "2025-11-25 09:30:00"
    assert r["结束时间"] == "2025-11-25 09:31:35" and r["持续时长（秒）"] == 95
    assert r["详情"] == "紧急报警" and r["有派车单"] == "否"
    assert r["首次确认人"] == "ws-op" and r["首次确认时间"] == "2025-11-25 09:31:00"
    assert r["处理记录"].split("\n") == [
        "2025-11-25 09:31:00 ws-op 确认：已电话联系",
        "2025-11-25 09:31:30 ws-op 备注",
        "2025-11-25 09:31:35 admin 关闭：误报",
    ]


def test_english_and_an_open_alarm_without_acks() -> None:
    a = {**ALARM, "state": "open", "ended_at": None, "acks": None, "ack": None}
    headers, [row] = alarm_table([a], tz="Asia/Shanghai", org_names={}, lang="en")
    r = dict(zip(headers, row, strict=True))
    assert r["Kind"] == "Terminal alarm" and r["Severity"] == "Critical" and r["State"] == "open"
    assert r["Ended"] == "" and r["Duration (s)"] is None and r["Handling record"] == ""
    assert r["Organisation"] == "ga-ws"


def test_csv_and_xlsx_hold_the_same_table() -> None:
    headers, rows = alarm_table(
        [ALARM, {**ALARM, "id": "b", "acks": None}], tz="Asia/Shanghai", org_names={}
    )
    table = list(csv.reader(io.StringIO(to_csv(headers, rows).decode("utf-8-sig"))))
    assert table[0] == headers
    assert table[1] == ["" if v is None else str(v) for v in rows[0]]
    wb = openpyxl.load_workbook(io.BytesIO(to_xlsx(headers, rows, sheet="报警记录")))
    got = list(wb["报警记录"].iter_rows(values_only=True))
    assert list(got[0]) == headers
    assert [list(g) for g in got[1:]] == [[None if v == "" else v for v in r] for r in rows]
    assert wb.sheetnames == ["报警记录"]  # notes only when there are some
    wb = openpyxl.load_workbook(
        io.BytesIO(to_xlsx(headers, rows, sheet="报警记录", notes=["仅导出最新的 1 条"]))
    )
    assert wb.sheetnames == ["报警记录", "说明"]

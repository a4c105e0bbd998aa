"""Tables as files: CSV (UTF-8 with BOM, so that Excel reads the Chinese) and XLSX.

Pure: rows in, bytes out. :func:`alarm_table` turns alarm objects (the API's JSON
shape) into the rows of the 报警记录 export, headers in Chinese (English with
``lang="en"``), times in the fleet's zone as ``YYYY-MM-DD HH:MM:SS``.
XLSX is written by XlsxWriter (a library made for writing the format).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo

import xlsxwriter

from notify.message import KIND_NAMES, SEVERITY_NAMES, detail_text

__all__ = ["ALARM_COLUMNS", "alarm_table", "to_csv", "to_xlsx"]

Lang = Literal["zh", "en"]
Cell = str | int | float | None

# (key, Chinese header, English header)
ALARM_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "报警编号", "Alarm id"),
    ("plate", "车牌号", "Plate"),
    ("vehicle", "车辆编号", "Vehicle"),
    ("org", "单位", "Organisation"),
    ("kind", "报警类型", "Kind"),
    ("severity", "级别", "Severity"),
    ("state", "状态", "State"),
    ("started_at", "开始时间", "Started"),
    ("ended_at", "结束时间", "Ended"),
    ("duration_s", "持续时长（秒）", "Duration (s)"),
    ("place", "位置", "Place"),
    ("lat", "纬度", "Latitude"),
    ("lon", "经度", "Longitude"),
    ("detail", "详情", "Detail"),
    ("covered", "有派车单", "Covered by an order"),
    ("ack_user", "首次确认人", "First acknowledged by"),
    ("ack_at", "首次确认时间", "First acknowledged at"),
    ("acks", "处理记录", "Handling record"),
)
KIND_EN: Mapping[str, str] = {
    "speeding": "Speeding",
    "off_hours": "Use outside working hours",
    "out_of_area": "Out of area",
    "forbidden_zone": "Banned place",
    "parking_violation": "Parked away from the lot",
    "offline": "Offline",
    "terminal_alarm": "Terminal alarm",
    "fatigue": "Fatigue driving",
}
SEVERITY_EN: Mapping[str, str] = {"info": "Info", "warning": "Warning", "critical": "Critical"}
STATE_NAMES: Mapping[str, Mapping[str, str]] = {
    "zh": {"open": "进行中", "closed": "已结束"},
    "en": {"open": "open", "closed": "closed"},
}
ACTION_NAMES: Mapping[str, Mapping[str, str]] = {
    "zh": {"ack": "确认", "close": "关闭", "note": "备注"},
    "en": {"ack": "acknowledged", "close": "closed", "note": "note"},
}


def _local(ms: int | None, tz: ZoneInfo) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def _handling(a: Mapping[str, Any], lang: Lang, tz: ZoneInfo) -> str:
    """The whole handling record (``acks``), oldest first; the first ack when there is none."""
    acks = a.get("acks")
    if acks is None:
        acks = [{**a["ack"], "action": "ack"}] if a.get("ack") else []
    words = ACTION_NAMES[lang]
    lines = []
    for e in acks:
        action = words.get(str(e.get("action", "ack")), str(e.get("action")))
        note = str(e.get("note") or "")
        sep = "：" if lang == "zh" else ": "
        lines.append(
            f"{_local(e.get('at'), tz)} {e.get('user', '')} {action}" + (sep + note if note else "")
        )
    return "\n".join(lines)


def alarm_table(
    alarms: Sequence[Mapping[str, Any]],
    *,
    tz: str,
    org_names: Mapping[str, str],
    lang: Lang = "zh",
) -> tuple[list[str], list[list[Cell]]]:
    """(headers, rows) of the 报警记录 export, one row per alarm, in the order given."""
    zone = ZoneInfo(tz)
    headers = [zh if lang == "zh" else en for _, zh, en in ALARM_COLUMNS]
    kinds = KIND_NAMES if lang == "zh" else KIND_EN
    severities = SEVERITY_NAMES if lang == "zh" else SEVERITY_EN
    yes, no = ("是", "否") if lang == "zh" else ("yes", "no")
    rows: list[list[Cell]] = []
    for a in alarms:
        ack = a.get("ack") or {}
        end = a.get("ended_at")
        values: dict[str, Cell] = {
            "id": a["id"],
            "plate": a.get("plate") or "",
            "vehicle": a["vehicle"],
            "org": org_names.get(a.get("org") or "", a.get("org") or ""),
            "kind": kinds.get(a["kind"], a["kind"]),
            "severity": severities.get(a.get("severity", ""), a.get("severity", "")),
            "state": STATE_NAMES[lang].get(a["state"], a["state"]),
            "started_at": _local(a["started_at"], zone),
            "ended_at": _local(end, zone),
            "duration_s": round((end - a["started_at"]) / 1000) if end is not None else None,
            "place": a.get("place") or "",
            "lat": a.get("lat"),
            "lon": a.get("lon"),
            "detail": detail_text(a["kind"], a.get("detail") or {}),
            "covered": yes if a.get("covered") else no,
            "ack_user": ack.get("user") or "",
            "ack_at": _local(ack.get("at"), zone),
            "acks": _handling(a, lang, zone),
        }
        rows.append([values[key] for key, _, _ in ALARM_COLUMNS])
    return headers, rows


def to_csv(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(headers)
    w.writerows(["" if v is None else v for v in r] for r in rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    sheet: str,
    notes: Sequence[str] = (),
    notes_sheet: str = "说明",
) -> bytes:
    """One sheet of ``rows`` under a bold header row; ``notes`` (truncation, filters) on a
    second sheet so that the table itself stays a clean rectangle."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_numbers": False})
    ws = wb.add_worksheet(sheet)
    bold = wb.add_format({"bold": True})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    ws.write_row(0, 0, headers, bold)
    ws.freeze_panes(1, 0)
    for i, r in enumerate(rows, start=1):
        for j, v in enumerate(r):
            if v is None:
                continue
            if isinstance(v, str):
                ws.write_string(i, j, v, wrap if "\n" in v else None)
            else:
                ws.write_number(i, j, v)
    for j, h in enumerate(headers):
        ws.set_column(j, j, max(10, min(40, 2 * len(h) + 4)))
    if notes:
        ns = wb.add_worksheet(notes_sheet)
        for i, n in enumerate(notes):
            ns.write_string(i, 0, n)
    wb.close()
    return buf.getvalue()

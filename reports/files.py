"""Reports as files: CSV (one level, UTF-8 with BOM) and XLSX (one sheet per level).

Pure: report JSON in, bytes out. Headers in Chinese (English with ``lang="en"``);
rates are written as numbers 0..1 with a percent format in XLSX, as they are in JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import xlsxwriter

__all__ = ["LEVEL_NAMES", "report_csv", "report_xlsx", "table_of"]

Lang = Literal["zh", "en"]

LEVEL_NAMES: Mapping[str, Mapping[str, str]] = {
    "zh": {"city": "市级", "county": "区县", "unit": "单位", "vehicle": "车辆"},
    "en": {"city": "City", "county": "Counties", "unit": "Units", "vehicle": "Vehicles"},
}
TOTAL = {"zh": "合计", "en": "Total"}
ITEM_COLUMNS = (
    ("day", "日期", "Day"),
    ("plate", "车牌号", "Plate"),
    ("vehicle_id", "车辆编号", "Vehicle"),
    ("org", "单位", "Organisation"),
    ("kind_zh", "报警类型", "Kind"),
    ("severity", "级别", "Severity"),
    ("alarm_id", "报警编号", "Alarm id"),
    ("ack_s", "确认用时（秒）", "Time to acknowledge (s)"),
    ("handle_s", "处理用时（秒）", "Time to handle (s)"),
)


def table_of(report: Mapping[str, Any], lang: Lang = "zh") -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of a report's JSON, the totals as the last row."""
    cols = report["columns"]
    headers = [c[lang] for c in cols]
    rows = [[r.get(c["key"]) for c in cols] for r in report["rows"]]
    total = [report["totals"].get(c["key"]) for c in cols]
    total[0] = TOTAL[lang]
    rows.append(total)
    return headers, rows


def report_csv(report: Mapping[str, Any], lang: Lang = "zh") -> bytes:
    """UTF-8 with a BOM (so that Excel reads the Chinese), CRLF, empty for None — the same
    dialect as the alarm export (web.export.to_csv), without importing the web layer."""
    headers, rows = table_of(report, lang)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(headers)
    w.writerows(["" if v is None else v for v in r] for r in rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def report_xlsx(
    levels: Sequence[Mapping[str, Any]],
    *,
    lang: Lang = "zh",
    notes: Sequence[str] = (),
    titled: bool = False,
) -> bytes:
    """One sheet per level (each a report JSON of the same report at that level), then the
    violations' list behind the counts when there is one, then a 说明 sheet. ``titled``:
    the levels of several reports, each sheet named after its report too."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_numbers": False})
    bold = wb.add_format({"bold": True})
    pct = wb.add_format({"num_format": "0.0%"})
    for rep in levels:
        sheet = LEVEL_NAMES[lang][rep["level"]]
        if titled:  # several reports in one book (the monthly report): 违规统计-区县
            sheet = f"{rep['title_' + lang]}-{sheet}"[:31]
        ws = wb.add_worksheet(sheet)
        headers, rows = table_of(rep, lang)
        types = [c.get("type", "int") for c in rep["columns"]]
        ws.write_row(0, 0, headers, bold)
        ws.freeze_panes(1, 1)
        for i, r in enumerate(rows, start=1):
            for j, v in enumerate(r):
                if v is None:
                    continue
                if isinstance(v, str):
                    ws.write_string(i, j, v, bold if i == len(rows) else None)
                else:
                    ws.write_number(i, j, v, pct if types[j] == "rate" else None)
        for j, h in enumerate(headers):
            ws.set_column(j, j, max(10, min(40, 2 * len(h) + 4)))
    items = next((r["items"] for r in levels if r.get("items") is not None), None)
    if items is not None:
        ws = wb.add_worksheet("明细" if lang == "zh" else "Items")
        ws.write_row(0, 0, [zh if lang == "zh" else en for _, zh, en in ITEM_COLUMNS], bold)
        for i, a in enumerate(items, start=1):
            for j, (k, _, _) in enumerate(ITEM_COLUMNS):
                v = a.get(k)
                if v is None:
                    continue
                if isinstance(v, str):
                    ws.write_string(i, j, v)
                else:
                    ws.write_number(i, j, v)
    if notes:
        ns = wb.add_worksheet("说明" if lang == "zh" else "Notes")
        for i, n in enumerate(notes):
            ns.write_string(i, 0, n)
    wb.close()
    return buf.getvalue()

"""The cost kinds (运行费用), their fields, Chinese template headers and supplier mappings — pure.

Five kinds come from the designated suppliers (三定点) and the road operators:

========== ====================================================================
kind       one row is
========== ====================================================================
fuel       加油卡交易: card, plate, station, time, litres, grade, amount
insurance  保险保单: plate, insurer, start, end, premium, type
repair     维修发票: plate, shop, date, items, parts, labour, amount, odometer
toll       通行费: plate, time, place, amount
parking    停车费: plate, time, place, amount
========== ====================================================================

Each field has a key (used in the API, the database and the code) and a Chinese
header (the documented template, :func:`template_rows`). A supplier's file with
other headers imports through its :class:`ColumnMapping` (``{their header: our
key}``), kept in the database (``store.costs``) per supplier and kind. A header
matches our key, our Chinese header, or the supplier's mapping — nothing else:
an unknown column is reported, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AMOUNT_LIMITS",
    "FIELDS",
    "KINDS",
    "KIND_LABELS",
    "ColumnMapping",
    "Field",
    "Kind",
    "header_keys",
    "template_rows",
]

Kind = Literal["fuel", "insurance", "repair", "toll", "parking"]
KINDS: tuple[Kind, ...] = ("fuel", "insurance", "repair", "toll", "parking")
KIND_LABELS: Mapping[str, str] = {
    "fuel": "燃油费",
    "insurance": "保险费",
    "repair": "维修费",
    "toll": "通行费",
    "parking": "停车费",
}


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    header: str  # the template's Chinese header
    type: Literal["text", "number", "time", "date"]
    required: bool = True
    example: str = ""


_PLATE = Field("plate", "车牌号", "text", example="川X10001")

FIELDS: Mapping[str, tuple[Field, ...]] = {
    "fuel": (
        Field("card", "加油卡号", "text", example="9000123456789"),
        _PLATE,
        Field("station", "加油站", "text", example="中石油广安城南加油站"),
        Field("time", "交易时间", "time", example="2026-11-03 08:15:00"),
        Field("litres", "加油量(升)", "number", example="42.5"),
        Field("grade", "油品", "text", required=False, example="92#"),
        Field("amount", "金额(元)", "number", example="318.75"),
        Field("station_lat", "加油站纬度", "number", required=False, example="30.4561"),
        Field("station_lon", "加油站经度", "number", required=False, example="106.6332"),
    ),
    "insurance": (
        _PLATE,
        Field("insurer", "保险公司", "text", example="人保财险广安分公司"),
        Field("start", "起保日期", "date", example="2026-11-01"),
        Field("end", "终保日期", "date", example="2027-10-31"),
        Field("amount", "保费(元)", "number", example="4200"),
        Field("type", "险种", "text", required=False, example="交强险+商业险"),
        Field("policy", "保单号", "text", required=False, example="PDAA2026511600001"),
    ),
    "repair": (
        _PLATE,
        Field("shop", "维修厂", "text", example="广安市定点维修中心"),
        Field("date", "维修日期", "date", example="2026-11-12"),
        Field("items", "维修项目", "text", required=False, example="更换机油、机滤"),
        Field("parts", "材料费(元)", "number", required=False, example="380"),
        Field("labour", "工时费(元)", "number", required=False, example="120"),
        Field("amount", "金额(元)", "number", example="500"),
        Field("odometer", "里程表读数(公里)", "number", required=False, example="45210"),
        Field("invoice", "发票号", "text", required=False, example="51000123"),
    ),
    "toll": (
        _PLATE,
        Field("time", "通行时间", "time", example="2026-11-05 10:20:00"),
        Field("place", "收费站", "text", example="广安东收费站"),
        Field("amount", "金额(元)", "number", example="35"),
    ),
    "parking": (
        _PLATE,
        Field("time", "停车时间", "time", example="2026-11-05 14:00:00"),
        Field("place", "停车场", "text", example="市政务中心停车场"),
        Field("amount", "金额(元)", "number", example="10"),
    ),
}

#: The largest plausible amount of one row, yuan: a bigger one is a typing error (多打了零).
AMOUNT_LIMITS: Mapping[str, float] = {
    "fuel": 3_000.0,
    "insurance": 100_000.0,
    "repair": 300_000.0,
    "toll": 3_000.0,
    "parking": 1_000.0,
}


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """A supplier's headers for one kind: ``{their header: our field key}``."""

    supplier: str
    kind: str
    columns: Mapping[str, str]

    def check(self) -> None:
        """Raises ValueError naming the first column mapped to a field the kind lacks."""
        keys = {f.key for f in FIELDS[self.kind]}
        for theirs, ours in self.columns.items():
            if ours not in keys:
                raise ValueError(
                    f"列 {theirs!r} 映射到 {ours!r}, 但{KIND_LABELS[self.kind]}没有这个字段; "
                    f"可用: {', '.join(sorted(keys))}"
                )


def header_keys(kind: str, headers: list[str], mapping: ColumnMapping | None) -> dict[str, str]:
    """``{file header: field key}`` for the headers of a file; raises ValueError naming an
    unknown header or a required field no header provides."""
    fields = FIELDS[kind]
    by_header = {f.header: f.key for f in fields} | {f.key: f.key for f in fields}
    theirs = dict(mapping.columns) if mapping is not None else {}
    out: dict[str, str] = {}
    for h in headers:
        if not h:
            continue
        key = theirs.get(h) or by_header.get(h)
        if key is None:
            raise ValueError(f"未知的列 {h!r} (请按模板填写, 或为该供应商配置列映射)")
        if key in out.values():
            raise ValueError(f"列 {h!r} 与另一列都对应字段 {key}")
        out[h] = key
    missing = [f.header for f in fields if f.required and f.key not in out.values()]
    if missing:
        raise ValueError("缺少必填列: " + "、".join(missing))
    return out


def template_rows(kind: str) -> tuple[list[str], list[str]]:
    """The documented template of a kind: its Chinese headers and one example row."""
    fields = FIELDS[kind]
    return [f.header for f in fields], [f.example for f in fields]

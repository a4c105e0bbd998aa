"""A small TOML writer for the configuration documents the simulator generates.

Python reads TOML (``tomllib``) but cannot write it; the generated configs use
only tables, arrays of tables, strings, numbers, booleans and arrays of
numbers, which is all this writer supports.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(prefix: str, d: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and not _is_table_array(v)}
    for k, v in scalars.items():
        out.append(f"{k} = {_value(v)}")
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.append(f"\n[{name}]")
            _table(name, v, out)
        elif _is_table_array(v):
            for item in v:
                out.append(f"\n[[{name}]]")
                _table(name, item, out)


def dumps(doc: dict[str, Any]) -> str:
    out: list[str] = []
    _table("", doc, out)
    return "\n".join(out).lstrip("\n") + "\n"

"""The README's configuration reference is the one generated from the code."""

from __future__ import annotations

from pathlib import Path

from fleetwatch.config import Config
from fleetwatch.configdoc import BEGIN, END, reference_table

README = Path(__file__).parents[2] / "README.md"


def test_readme_holds_the_generated_reference() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    inside = text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")
    assert inside == reference_table(), "run: python -m fleetwatch.configdoc, paste into README"


def test_every_top_level_table_is_documented() -> None:
    table = reference_table()
    for name in Config.model_fields:
        if name != "source":
            assert f"{name}" in table

"""The [rules] table validates with messages that say what is wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rules.config import RulesConfig


def test_defaults_are_valid() -> None:
    cfg = RulesConfig()
    assert cfg.fatigue.max_driving_s == 4 * 3600 and cfg.fatigue.rest_s == 20 * 60
    assert cfg.off_hours.working_hours.default.minutes("winter") == [(510, 720), (840, 1050)]


@pytest.mark.parametrize(
    ("doc", "msg"),
    [
        ({"terminal_alarm": {"bits": ["teleport"]}}, "unknown alarm bit"),
        ({"off_hours": {"working_hours": {"default": {"winter": ["18:00-08:00"]}}}}, "ends before"),
        ({"off_hours": {"working_hours": {"default": {"summer": ["8:30-12"]}}}}, "HH:MM-HH:MM"),
        ({"off_hours": {"working_hours": {"summer_start": "13-01"}}}, "MM-DD"),
        ({"parking_violation": {"night_start": "25:00"}}, "HH:MM"),
        ({"orders": {"excuses": {"local": ["speeding"]}}}, "unknown excuse"),
        ({"orders": {"excuses": {"taxi": []}}}, "unknown order type"),
        ({"speeding": {"colour": "red"}}, "Extra inputs"),
    ],
)
def test_bad_values_are_rejected(doc: dict, msg: str) -> None:
    with pytest.raises(ValidationError, match=msg):
        RulesConfig.model_validate(doc)

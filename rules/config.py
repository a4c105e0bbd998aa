"""Typed configuration of the rules engine (``[rules]`` table)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RulesConfig", "SpeedingConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpeedingConfig(_Frozen):
    enabled: bool = True
    min_duration_s: float = Field(10.0, ge=0, description="over the limit this long opens")
    close_after_s: float = Field(10.0, ge=0, description="below the limit this long closes")
    default_limit_kmh: float = Field(80.0, gt=0)
    limits_by_type: dict[str, float] = Field(default_factory=dict)


class RulesConfig(_Frozen):
    speeding: SpeedingConfig = SpeedingConfig()

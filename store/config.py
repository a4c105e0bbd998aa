"""Typed configuration of persistence (``[store]``) and live state (``[live]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LiveConfig", "StoreConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreConfig(_Frozen):
    kind: Literal["sqlite", "postgres", "memory"] = "sqlite"
    sqlite_path: str = "fleetwatch.db"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    positions_retention_days: int = Field(183, ge=1, description="JT/T 796: at least 183 days")
    alarms_retention_days: int = Field(1095, ge=1, description="violation records: 3 years")


class LiveConfig(_Frozen):
    kind: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fw:"

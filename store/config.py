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
    # FULL: a committed batch survives a power cut, not only a crash of the process (the
    # broker is acknowledged after the commit, so this is what "durably written" means).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    postgres_schema: str = Field(
        default="fleetwatch", pattern=r"^[a-z_][a-z0-9_]{0,47}$", description="all tables live here"
    )
    # "auto": TimescaleDB when the extension is available (hypertable, compression,
    # retention policy), native daily partitions otherwise. "off": always native partitions.
    timescale: Literal["auto", "off"] = "auto"
    timescale_compress_after_days: int = Field(default=7, ge=1)
    connect_timeout_s: int = Field(default=3, ge=1, le=60)
    partitions_ahead_days: int = Field(
        default=3, ge=1, le=60, description="daily partitions made ahead"
    )
    positions_retention_days: int = Field(
        default=183, ge=1, description="JT/T 796: at least 183 days"
    )
    alarms_retention_days: int = Field(default=1095, ge=1, description="violation records: 3 years")
    dead_letters_retention_days: int = Field(default=30, ge=1)
    retention_interval_s: float = Field(
        default=3600.0,
        ge=60,
        le=86_400,
        description="how often the running service removes what is past its retention",
    )
    retention_chunk_rows: int = Field(
        default=50_000,
        ge=100,
        description="SQLite: rows deleted per transaction (writes wait for one chunk at most)",
    )
    # Packing (PostgreSQL, native partitions): closed UTC days become one row per vehicle-day
    # of compressed columns (store/packed.py, docs/storage.md), ~10 B/position instead of ~150.
    pack_after_days: int = Field(
        default=2,
        ge=0,
        le=3650,
        description="PostgreSQL: UTC days that ended more than this many days ago are packed"
        " (after the nightly rollup read them); 0: never pack",
    )
    pack_margin_s: float = Field(
        default=3600.0,
        ge=0,
        le=86_400,
        description="packing waits this long past pack_after_days (clock skew between nodes)",
    )
    pack_max_days_per_run: int = Field(
        default=3, ge=1, le=366, description="days packed by one maintenance run at most"
    )
    pack_vehicles_per_txn: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="vehicles packed per transaction (bounds the packer's memory: ~60 MB"
        " per 100 vehicles at 10 s)",
    )
    # Degradation: while PostgreSQL is down, positions spool to local files (in order).
    spool_dir: str = "spool"
    spool_max_rows: int = Field(
        default=5_000_000, ge=1, description="spool full: refuse, broker holds"
    )
    retry_interval_s: float = Field(
        default=2.0, gt=0, description="how often a down database is retried"
    )


class LiveConfig(_Frozen):
    kind: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fw:"
    retry_interval_s: float = Field(
        default=2.0, gt=0, description="how often a down Redis is retried"
    )
    alarm_stream_maxlen: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description="alarm changes kept in the Redis Stream (how far back a page can resume)",
    )
    alarm_wait_replicas: int = Field(
        default=0,
        ge=0,
        le=5,
        description="replicas that must confirm each alarm (WAIT); 1 with Sentinel (docs/feed.md)",
    )
    alarm_wait_ms: int = Field(
        default=200, ge=1, le=10_000, description="how long one WAIT for replicas may take"
    )

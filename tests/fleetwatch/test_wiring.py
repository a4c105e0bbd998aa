"""The root wires the seams by constructor and typed fields: the notify router reaches the
history store it queues through, and /healthz reads the store's health() (no getattr)."""

from __future__ import annotations

from pathlib import Path

from fleetwatch.config import parse_config
from fleetwatch.service import build_service
from store.history import StoreHealth


def test_the_notify_router_is_given_to_the_history_store(tmp_path: Path) -> None:
    store = {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")}
    on = build_service(parse_config({"store": store, "notify": {"enabled": True}}))
    router = on.history.notify_router  # type: ignore[union-attr]
    assert router is not None and on.notifier is not None
    off = build_service(parse_config({"store": store}))
    assert off.history.notify_router is None and off.notifier is None  # type: ignore[union-attr]


def test_health_reads_the_store_and_the_live_state(tmp_path: Path) -> None:
    store = {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")}
    svc = build_service(parse_config({"store": store}))
    assert svc.history is not None and svc.history.health() == StoreHealth()
    svc.live.degraded = True
    h = svc.health()
    assert not h["ok"] and any("live state degraded" in p for p in h["problems"])
    assert "history" not in h  # a SQLite store has no spool to describe

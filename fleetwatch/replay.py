"""``fleetwatch replay``: run the rules engine over stored history.

What an auditor asks: "which episodes does this period hold?", and "what if the
limit were 80 km/h?" (edit the configuration, replay). The engine is the live
one (:func:`rules.replay.replay`), fed the stored positions hour by hour in time
order, so live and replay find the same episodes with the same ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from fleet.batch import PositionBatch
from fleet.errors import ConfigError
from fleet.events import AlarmEvent
from fleet.registry import Registry
from fleetwatch.config import Config, load_config

__all__ = ["parse_when", "read_batches", "replay_history", "replay_main"]

WINDOW_MS = 3_600_000
_GMT8 = timezone(timedelta(hours=8))


def parse_when(value: str) -> int:
    """Epoch ms from epoch ms digits or an ISO date/time (no offset: the fleet's GMT+8)."""
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            "<command line>",
            "--from/--to",
            f"{value!r} is not a time",
            "use 2026-11-24, 2026-11-24T08:00 or epoch milliseconds",
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_GMT8)
    return int(dt.timestamp() * 1000)


async def read_batches(
    history: Any, registry: Registry, from_ms: int, to_ms: int, window_ms: int = WINDOW_MS
) -> list[PositionBatch]:
    """Stored positions of every vehicle in [from_ms, to_ms), one batch per time window."""
    out: list[PositionBatch] = []
    start = from_ms
    while start < to_ms:
        end = min(start + window_ms, to_ms)
        parts = []
        for i, vid in enumerate(registry.ids):
            cols = await history.track(vid, start, end)
            if len(cols["ts"]):
                parts.append(
                    PositionBatch.from_columns(
                        vehicle=[i] * len(cols["ts"]), recv_ts=cols["ts"], **cols
                    )
                )
        out.append(PositionBatch.concat(parts))
        start = end
    return out


async def replay_history(
    cfg: Config, from_ms: int, to_ms: int, orders: Sequence[Any] = ()
) -> list[AlarmEvent]:
    """Every episode event the rules find in stored history between the two times, with
    ``orders`` (dispatch orders, every version in order: the latest of an id holds)."""
    from fleetwatch.service import _fences, _history
    from rules.replay import replay

    registry = Registry.from_config(cfg)
    history = _history(cfg)
    if history is None:
        raise ConfigError(
            cfg.source,
            "store.kind",
            "replay needs stored history",
            'set [store] kind = "sqlite" or "postgres"',
        )
    await history.open(registry)
    try:
        batches = await read_batches(history, registry, from_ms, to_ms)
    finally:
        await history.close()
    fences = _fences(cfg)
    return replay(
        batches,
        cfg.rules,
        registry,
        fences=lambda: fences.index,
        timezone=cfg.service.timezone,
        vehicle_state=cfg.vehicle_state,
        orders=orders,
    )


def _rows(events: list[AlarmEvent]) -> Iterator[dict[str, Any]]:
    from rules.replay import episodes

    for e in episodes(events):
        yield {
            "id": e.id,
            "vehicle": e.vehicle_id,
            "kind": e.kind,
            "state": e.state,
            "started_at": e.started_at,
            "ended_at": e.ended_at,
            "backfill": e.backfill,
            "detail": e.detail,
        }


def replay_main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    orders: list[Any] = []
    if getattr(args, "orders", None):
        from rules.orders import load_orders_csv

        orders = load_orders_csv(
            args.orders, Registry.from_config(cfg), timezone=cfg.service.timezone
        )
    events = asyncio.run(replay_history(cfg, parse_when(args.from_), parse_when(args.to), orders))
    rows = list(_rows(events))
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        for r in rows:
            start = datetime.fromtimestamp(r["started_at"] / 1000, _GMT8).isoformat(
                timespec="seconds"
            )
            print(f"{start}  {r['vehicle']:<12} {r['kind']:<18} {r['state']:<7} {r['id']}")
        print(f"{len(rows)} episodes")
    return 0

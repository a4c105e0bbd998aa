"""``fleetwatch rollup``: (re)build days of the rollup from stored history, or a "what if".

::

    fleetwatch rollup --config fleetwatch.toml --from 2026-11-01 --to 2026-11-30
    fleetwatch rollup --config fleetwatch.toml --what-if limits80.toml --scenario limit80 \\
        --from 2026-11-01 --to 2026-11-30

Without ``--what-if`` the real rollup of each day is rebuilt (the same rows as the
service writes; idempotent). With it, the rules of the other configuration (changed
limits, working hours, fences) are replayed over the same stored positions
(:func:`fleetwatch.replay.replay_history`) and the days are written under the scenario
name beside the real ones; reports show it with ``scenario=<name>``. A replayed episode
has no handling record, so a what-if's handling report is empty by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError

__all__ = ["add_arguments", "rollup_main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the service's configuration")
    p.add_argument("--from", dest="from_", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", required=True, help="last day, YYYY-MM-DD (included)")
    p.add_argument("--what-if", dest="what_if", help="a configuration whose rules to replay")
    p.add_argument("--scenario", help="the what-if's name (default: the file's stem)")
    p.add_argument("--json", action="store_true", help="one JSON object per day")


def _day(text: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError("<command line>", name, f"{text!r} is not a day", "YYYY-MM-DD") from None


async def _orders(cfg: Any) -> list[dict[str, Any]]:
    """The site's orders, from the order store (:mod:`store.orders`) the web writes."""
    from store.orders import OrderStore

    store = OrderStore(cfg.store)
    await store.open()
    try:
        return await store.select()
    finally:
        await store.close()


def _episode_dicts(events: list[Any], registry: Any) -> list[dict[str, Any]]:
    from rules.replay import episodes

    out: list[dict[str, Any]] = []
    for e in episodes(events):
        i = registry.by_id(e.vehicle_id)
        out.append(
            {
                "id": e.id,
                "vehicle": e.vehicle_id,
                "org": registry.org_of(i) if i is not None else "",
                "kind": e.kind,
                "severity": e.severity,
                "started_at": e.started_at,
                "covered": e.covered,
                "acks": [],
            }
        )
    return out


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from fleet.registry import Registry
    from fleetwatch.config import load_config
    from fleetwatch.service import _fences, _history
    from reports.daily import build_day
    from reports.rollup import RollupParams
    from store.history import day_bounds_ms
    from store.rollup import REAL, rollup_store

    cfg = load_config(args.config)
    first, last = _day(args.from_, "--from"), _day(args.to, "--to")
    if last < first:
        raise ConfigError("<command line>", "--to", "is before --from", "swap them")
    tz = cfg.service.timezone
    registry = Registry.from_config(cfg)
    history = _history(cfg)
    if history is None:
        raise ConfigError(cfg.source, "store.kind", "the rollup needs stored history", "sqlite")
    scenario, alarms_by_day = REAL, None
    wcfg = cfg
    if args.what_if:
        from fleetwatch.replay import replay_history

        wcfg = load_config(args.what_if)
        scenario = args.scenario or Path(args.what_if).stem
        if scenario == REAL:
            raise ConfigError("<command line>", "--scenario", "'real' is the real rollup", "")
        start, _ = day_bounds_ms(first, tz)
        _, end = day_bounds_ms(last, tz)
        events = await replay_history(wcfg, start, end)
        alarms_by_day = _episode_dicts(events, registry)
    fences = _fences(wcfg)
    orders = await _orders(cfg)
    await history.open(registry)
    out = []
    try:
        rollup = rollup_store(history)
        await rollup.open()
        now = int(time.time() * 1000)
        d = first
        while d <= last:
            t = time.perf_counter()
            res = await build_day(
                history,
                rollup,
                registry,
                d,
                tz,
                now_ms=now,
                fences=fences.index,
                orders=orders,
                alarms=alarms_by_day,
                scenario=scenario,
                params=RollupParams.of(wcfg.vehicle_state),
            )
            res["seconds"] = round(time.perf_counter() - t, 3)
            out.append(res)
            d += dt.timedelta(days=1)
    finally:
        await history.close()
    return out


def rollup_main(args: argparse.Namespace) -> int:
    for res in asyncio.run(_run(args)):
        if args.json:
            sys.stdout.write(json.dumps(res, ensure_ascii=False) + "\n")
        else:
            state = "closed" if res["closed"] else "so far"
            print(
                f"{res['day']} [{res['scenario']}] {state}: {res['vehicles']} vehicles,"
                f" {res['positions']} positions, {res['alarms']} alarms, {res['seconds']} s"
            )
    return 0

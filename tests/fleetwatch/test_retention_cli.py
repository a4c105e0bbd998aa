"""``fleetwatch retention [--dry-run]`` on an SQLite history."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.cli import main
from fleetwatch.config import load_config
from store.factory import create_history

DAY_MS = 86_400_000


def write_fleet(tmp_path: Path) -> Path:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f"""
[store]
kind = "sqlite"
sqlite_path = "{tmp_path / "h.db"}"

[[orgs]]
id = "c"
name = "City"

[[vehicles]]
id = "v0"
plate = "川X00000"
terminal = "13900000000"
org = "c"
""",
        encoding="utf-8",
    )
    return cfg


async def seed(cfg_path: Path) -> None:
    cfg = load_config(str(cfg_path))
    history = create_history(cfg.store)
    await history.open(Registry.from_config(cfg))
    now = time.time_ns() // 1_000_000
    ts = np.array([now - 300 * DAY_MS, now - 200 * DAY_MS, now - DAY_MS])
    await history.write_positions(
        PositionBatch.from_columns(vehicle=np.zeros(3), ts=ts, lat=np.full(3, 30.4),
                                   lon=np.full(3, 106.6))
    )  # fmt: skip
    await history.close()


def test_dry_run_then_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_fleet(tmp_path)
    asyncio.run(seed(cfg))
    assert main(["retention", "--config", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "将删除" in out and "Would remove: positions 2" in out
    assert main(["retention", "--config", str(cfg), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"]["positions"] == 2  # still there
    assert main(["retention", "--config", str(cfg)]) == 0
    assert "removed: positions 2" in capsys.readouterr().out
    assert main(["retention", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dry_run": False,
        "removed": {"positions": 0, "alarms": 0, "dead_letters": 0},
    }

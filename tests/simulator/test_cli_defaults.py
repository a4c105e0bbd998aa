"""The simulator never publishes to a broker nobody named, and writes no demo secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetwatch.cli import main
from fleetwatch.config import load_config
from simulator.cli import demo_secret_warnings
from simulator.scenario import DEMO_TOKEN, fleet_config
from simulator.toml import dumps
from web.auth import verify_password


def test_a_plain_simulate_needs_the_broker_named(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: this published to 127.0.0.1:1883, a real broker, for a second.
    rc = main(["simulate", "--vehicles", "2", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--host" in err and "--port" in err and "published" not in err
    rc = main(["simulate", "--vehicles", "2", "--duration", "1", "--port", "1883"])
    assert rc == 2 and "both --host and --port" in capsys.readouterr().err


def test_write_config_writes_generated_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.toml"
    assert main(["simulate", "--vehicles", "3", "--write-config", str(path)]) == 0
    out = capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    assert DEMO_TOKEN not in text and 'password = "demo"' not in text
    cfg = load_config(str(path))
    assert cfg.web.tokens and all(len(t.token) >= 24 for t in cfg.web.tokens)
    printed = dict(re.findall(r"^  (\S+): (\S+)$", out, flags=re.M))
    assert set(printed) == {u.username for u in cfg.web.users}
    for u in cfg.web.users:
        assert u.password.startswith("$argon2") and verify_password(u.password, printed[u.username])
        assert printed[u.username] not in text
    assert demo_secret_warnings(cfg) == []
    # a second file gets other secrets
    main(["simulate", "--vehicles", "3", "--write-config", str(tmp_path / "b.toml")])
    assert load_config(str(tmp_path / "b.toml")).web.tokens != cfg.web.tokens


def test_check_config_warns_about_demo_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.fleet import FleetSpec

    path = tmp_path / "demo-like.toml"
    path.write_text(dumps(fleet_config(FleetSpec(vehicles=3))), encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "demo's well-known token" in err
    assert "'demo' has a plain password shorter than 12 characters" in err
    assert "'wusheng' has a plain password" in err

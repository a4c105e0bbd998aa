"""``fleetwatch gateway`` and ``check-config`` on the gateway's configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetwatch.cli import main
from ingest.jt808.config import GatewayConfig
from ingest.jt808.registrations import SqliteRegistrations

FLEET = """
[[orgs]]
id = "city"
name = "广安市"
[[vehicles]]
id = "v1"
plate = "川X00001"
terminal = "13900000001"
org = "city"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fleet.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_check_config_requires_auth_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(write(tmp_path, FLEET))]) == 1
    err = capsys.readouterr().err
    assert "gateway.auth_secret" in err and "未设置" in err and "not set" in err
    ok = FLEET + '[gateway]\nauth_secret = "0123456789abcdef-xyz"\n'
    assert main(["check-config", str(write(tmp_path, ok))]) == 0
    # Without authentication there is no code to keep: nothing to report.
    assert (
        main(["check-config", str(write(tmp_path, FLEET + "[gateway]\nrequire_auth = false\n"))])
        == 0
    )
    # A short secret is refused when the file is read.
    short = FLEET + '[gateway]\nauth_secret = "short"\n'
    assert main(["check-config", str(write(tmp_path, short))]) == 2
    assert "gateway.auth_secret" in capsys.readouterr().err


def test_gateway_does_not_start_without_auth_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gateway", "--config", str(write(tmp_path, FLEET))]) == 2
    assert "auth_secret" in capsys.readouterr().err


def test_reset_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "reg.sqlite3"
    conf = write(tmp_path, FLEET + f'[gateway]\nregistrations = "sqlite:{db}"\n')
    store = SqliteRegistrations(db)

    async def claim() -> int | None:
        try:
            return await store.claim("13900000001")
        finally:
            await store.close()

    assert asyncio.run(claim()) == 1
    assert main(["gateway", "reset-terminal", "013900000001", "--config", str(conf)]) == 0
    assert "已重置" in capsys.readouterr().out
    assert main(["gateway", "reset-terminal", "13900000001", "--config", str(conf)]) == 1
    assert "未注册" in capsys.readouterr().out
    assert asyncio.run(claim()) == 2
    assert main(["gateway", "reset-terminal", "13x", "--config", str(conf)]) == 2


def test_registration_match_is_checked_at_load() -> None:
    with pytest.raises(ValueError, match="registration_match"):
        GatewayConfig(registration_match=("colour",))  # type: ignore[arg-type]

"""Configuration errors name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.errors import ConfigError
from fleet.registry import Registry
from fleetwatch.cli import main
from fleetwatch.config import load_config, parse_config

BASE = """
[[orgs]]
id = "city"
name = "广安市"
[[orgs]]
id = "county"
name = "岳池县"
parent = "city"
[[vehicles]]
id = "v1"
plate = "川X00001"
terminal = "13900000001"
org = "county"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fleet.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_valid_file_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    reg = Registry.from_config(cfg)
    assert reg.by_terminal("13900000001") == 0
    assert reg.by_terminal("013900000001") == 0  # BCD phone with a leading zero
    assert reg.org_of(0) == "county"
    assert reg.orgs.subtree("city") == {"city", "county"}
    assert reg.visible_mask("county").tolist() == [True]
    assert reg.speed_limit_kmh.dtype == np.float32 and reg.speed_limit_kmh[0] == 80


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("[mqtt]\nport = 70000\n", "mqtt.port", "65535"),
        ("[mqtt]\nprot = 1\n", "mqtt.prot", "spelling"),
        ('[service]\ntimezone = "Mars/Olympus"\n', "service.timezone", "IANA"),
        ('[store]\nkind = "oracle"\n', "store.kind", "allowed values"),
        (
            '[[vehicles]]\nid = "v2"\nplate = "川X00002"\nterminal = "13900000001"\norg = "city"\n',
            "vehicles[1].terminal",
            "own terminal",
        ),
        (
            '[[vehicles]]\nid = "v2"\nplate = "川X00002"\nterminal = "2"\norg = "nowhere"\n',
            "vehicles[1].org",
            "[[orgs]]",
        ),
        ('[[vehicles]]\nid = "v3"\nterminal = "3"\norg = "city"\n', "vehicles[1].plate", "add"),
        (
            '[[vehicles]]\nid = "川X/0002"\nplate = "川X00002"\nterminal = "2"\norg = "city"\n',
            "vehicles[1].id",
            "letters, digits and . _ ~ -",
        ),
        (
            '[[vehicles]]\nid = "v 2"\nplate = "川X00002"\nterminal = "2"\norg = "city"\n',
            "vehicles[1].id",
            "goes in URLs",
        ),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path: Path, extra: str, key: str, words: str) -> None:
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert words in str(err)


def test_org_cycle_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(
            {
                "orgs": [
                    {"id": "a", "name": "A", "parent": "b"},
                    {"id": "b", "name": "B", "parent": "a"},
                ]
            }
        )
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[[orgs]\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_vehicles_from_csv(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_text(
        "id,plate,terminal,org,type,speed_limit_kmh\nv9,川X00009,13900000009,city,bus,60\n",
        encoding="utf-8",
    )
    p = write(tmp_path, 'vehicles_csv = "v.csv"\n' + BASE)
    cfg = load_config(p)
    assert [v.id for v in cfg.vehicles] == ["v1", "v9"]
    assert Registry.from_config(cfg).speed_limit_kmh.tolist() == [80.0, 60.0]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = '[gateway]\nauth_secret = "0123456789abcdef0123"\n'
    assert main(["check-config", str(write(tmp_path, BASE + secret))]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, BASE + "[web]\nport = -1\n"))]) == 2
    assert "web.port" in capsys.readouterr().err


def test_vehicle_ids_are_url_safe(tmp_path: Path) -> None:
    extra = '[[vehicles]]\nid = "GA-0002.b_~"\nplate = "川X00002"\nterminal = "2"\norg = "city"\n'
    cfg = load_config(write(tmp_path, BASE + extra))
    assert cfg.vehicles[1].id == "GA-0002.b_~"
    for bad in ("a/b", "a?b", "a#b", "a%2Fb", "车1", "a:b"):
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, BASE + extra.replace("GA-0002.b_~", bad)))
        assert info.value.key == "vehicles[1].id" and "URLs" in info.value.fix

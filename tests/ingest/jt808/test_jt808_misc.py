"""Gateway configuration and the benchmark entry point."""

from __future__ import annotations

import pydantic
import pytest

from ingest.jt808 import bench
from ingest.jt808.config import GatewayConfig


def test_gateway_config_defaults_and_lenient_phones() -> None:
    cfg = GatewayConfig(lenient_terminals=("010030000681",))
    assert (cfg.listen_host, cfg.listen_port, cfg.mqtt_port) == ("127.0.0.1", 6808, 1883)
    assert cfg.idle_timeout_s == 3 * cfg.heartbeat_s
    assert cfg.is_lenient("010030000681") and cfg.is_lenient("00000000010030000681")
    assert not cfg.is_lenient("010030000682")
    with pytest.raises(pydantic.ValidationError):
        GatewayConfig(listen_port=70000)
    with pytest.raises(pydantic.ValidationError):
        GatewayConfig(unknown_key=1)  # type: ignore[call-arg]


def test_bench_quick_reports_both_paths() -> None:
    out = bench.run(quick=True)
    assert out["name"] == "decode"
    assert out["batch_frames_per_s"] > 0 and out["scalar_frames_per_s"] > 0


def test_decode_cli_stdin_verbose_and_bad_hex(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import json

    from ingest.jt808.cli import decode_main

    two = "7e00020000012345678900000a817e 7e 00020000040021679287002b7d02 7e\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(two + "\nzz\n"))
    assert decode_main(["-", "--verbose"]) == 1
    objs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["valid"] for o in objs] == [True, True, False]
    assert [o["serial"] for o in objs[:2]] == [10, 43]
    assert objs[2]["why_invalid"] == "hex" and "detail" in objs[2]

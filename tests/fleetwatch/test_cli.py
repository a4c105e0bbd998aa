"""The console script: subcommands reach their handlers with their own options."""

from __future__ import annotations

import json

import pytest

from fleetwatch.cli import BENCHES, main

FRAME = (
    "7e0200002611223344556622b8000000010000000200ba7f0e07e4f11c0028003c000018071510101001"
    "040000006402020037577e"
)


def test_decode_prints_one_json_object_per_frame(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", FRAME]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["valid"] is True and out["msg_id"] == 0x0200 and out["phone"] == "112233445566"
    assert out["positions"][0]["lat"] == pytest.approx(12.222222)


def test_decode_rejects_a_broken_frame_with_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    broken = FRAME[:-4] + "00" + FRAME[-2:]  # wrong checksum
    assert main(["decode", broken]) == 1
    out = json.loads(capsys.readouterr().out.strip())
    assert out["valid"] is False and out["why_invalid"]


def test_gateway_takes_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gateway", "--help"])
    assert info.value.code == 0
    assert "--listen" in capsys.readouterr().out


def test_every_bench_module_has_run() -> None:
    import importlib

    for name, module in BENCHES.items():
        assert callable(importlib.import_module(module).run), name

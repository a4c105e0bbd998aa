"""Every vector of jt808_vectors.json decodes to its values or is rejected with its reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jt808_helpers import load_vectors

from fleet.errors import FrameError
from ingest.jt808.cli import decode_main
from ingest.jt808.codec import decode_frame
from ingest.jt808.messages import Location, LocationBatch, PlatformReply
from ingest.jt808.position import decode_position_payloads, decode_position_payloads_scalar

VECTORS = load_vectors()
VALID = [v for v in VECTORS if v["valid"] and "note" not in v]
QUIRKY = [v for v in VECTORS if "note" in v]
INVALID = [v for v in VECTORS if not v["valid"]]

# The vectors file words one reason as a sentence; this decoder's short code for it.
REASON_CODES = {
    "a raw 0x7D (the checksum) not escaped as 7D 01 before the end delimiter": "escape",
}


def _ids(vs: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vs]


def _check_positions(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, abs=1e-9), key
            else:
                assert g[key] == value, key


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    rc = decode_main(list(args))
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("v", VALID, ids=_ids(VALID))
def test_valid_vector_decodes(v: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc, objs = _cli(capsys, v["hex"])
    assert rc == 0
    (obj,) = objs
    assert obj["valid"] is True
    assert obj["why_invalid"] is None
    for key in ("msg_id", "version", "phone", "serial"):
        assert obj[key] == v[key], key
    _check_positions(obj["positions"], v.get("positions", []))
    if "batch_type" in v:
        assert obj["batch_type"] == v["batch_type"]
    if "ack" in v:
        assert obj["ack"] == v["ack"]
    if "driver_card" in v:  # 0x0702: the card's fields, the whole object
        assert obj.pop("driver_card") == v["driver_card"]
    assert set(obj) == {
        "valid", "why_invalid", "msg_id", "version", "phone", "serial",
        "positions", "batch_type", "ack",
    }  # fmt: skip


@pytest.mark.parametrize("v", INVALID, ids=_ids(INVALID))
def test_invalid_vector_rejected_with_reason(v: dict[str, Any]) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(bytes.fromhex(v["hex"]))
    assert info.value.reason == REASON_CODES.get(v["why_invalid"], v["why_invalid"])


@pytest.mark.parametrize("v", INVALID, ids=_ids(INVALID))
def test_invalid_vector_cli(v: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc, (obj,) = _cli(capsys, v["hex"])
    assert rc == 1
    assert obj["valid"] is False
    assert obj["why_invalid"] == REASON_CODES.get(v["why_invalid"], v["why_invalid"])
    for key in ("msg_id", "version", "phone", "serial"):  # the header is still shown
        assert obj[key] == v[key], key


@pytest.mark.parametrize("v", QUIRKY, ids=_ids(QUIRKY))
def test_quirky_vector_strict_rejects_lenient_accepts(
    v: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    raw = bytes.fromhex(v["hex"])
    with pytest.raises(FrameError):
        decode_frame(raw)
    d = decode_frame(raw, lenient=lambda phone: phone == v["phone"])
    assert d.quirks
    assert (d.header.msg_id, d.header.phone, d.header.serial) == (
        v["msg_id"],
        v["phone"],
        v["serial"],
    )
    assert d.header.version == v["version"]
    rc, (obj,) = _cli(capsys, "--lenient", v["hex"])
    assert rc == 0 and obj["valid"] is True
    if "positions" in v:
        _check_positions(obj["positions"], v["positions"])


def test_lenient_is_per_terminal() -> None:
    v = next(v for v in QUIRKY if v.get("why_invalid") == "checksum")
    with pytest.raises(FrameError):
        decode_frame(bytes.fromhex(v["hex"]), lenient=lambda phone: phone == "999")


def test_all_vectors_through_the_batch_path() -> None:
    payloads = [bytes.fromhex(v["hex"]) for v in VECTORS]
    for lenient in (None, lambda phone: True):
        fast = decode_position_payloads(payloads, lenient=lenient)
        slow = decode_position_payloads_scalar(payloads, lenient=lenient)
        assert fast.phones == slow.phones
        for k in fast.columns:
            assert fast.columns[k].tolist() == pytest.approx(slow.columns[k].tolist(), nan_ok=True)
    # strict: rows per vector as listed
    fast = decode_position_payloads(payloads)
    src = fast.columns["source"].tolist()
    for i, v in enumerate(VECTORS):
        want = v.get("positions", []) if v["valid"] and "note" not in v else []
        assert src.count(i) == len(want), v["name"]
        rows = [r for r, s in enumerate(src) if s == i]
        for r, w in zip(rows, want, strict=True):
            assert fast.columns["lat"][r] == pytest.approx(w["lat"])
            assert fast.columns["lon"][r] == pytest.approx(w["lon"])
            assert fast.columns["alarm_bits"][r] == w["alarm"]
            assert fast.columns["status_bits"][r] == w["status"]
            assert fast.columns["backfill"][r] == (v.get("batch_type") == 1)
            assert fast.phones[fast.columns["phone"][r]] == v["phone"]
    assert {i for i, _, _ in fast.errors} == {
        i for i, v in enumerate(VECTORS) if not v["valid"] or "note" in v
    }


def test_decoded_message_types(vectors: list[dict[str, Any]]) -> None:
    kinds = {
        v["name"]: type(decode_frame(bytes.fromhex(v["hex"]))).__name__
        for v in vectors
        if v["valid"] and "note" not in v
    }
    assert kinds  # sanity
    by_id = {
        0x0200: Location,
        0x0704: LocationBatch,
        0x8001: PlatformReply,
    }
    for v in vectors:
        if v["valid"] and "note" not in v and v["msg_id"] in by_id:
            assert isinstance(decode_frame(bytes.fromhex(v["hex"])).message, by_id[v["msg_id"]])

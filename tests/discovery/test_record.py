"""TXT encoding and parsing without a network."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.discovery.record import (
    MAX_ITEM_BYTES,
    MAX_TXT_BYTES,
    PeerRecord,
    encode_txt,
    parse_txt,
    record_from_worker_info,
    split_txt,
)

FP = "01" * 32


def _wire(props: dict[str, str]) -> bytes:
    items = [f"{k}={v}".encode() for k, v in props.items()]
    return b"".join(bytes([len(i)]) + i for i in items)


def test_round_trip_keeps_every_field():
    rec = PeerRecord(
        worker_id="w-1", host="studio.local", chip="Apple M2 Ultra", memory_bytes=192 << 30,
        mlx_version="0.32.0", orchard_version="0.1.0", state="busy", paired=True, fingerprint=FP,
    )  # fmt: skip
    back = parse_txt(
        _wire(encode_txt(rec)),
        service_name="x._orchard._tcp.local.",
        port=7,
        addresses=("10.0.0.2",),
    )
    assert back.valid, back.problem
    for name in (
        "worker_id",
        "host",
        "chip",
        "memory_bytes",
        "mlx_version",
        "orchard_version",
        "state",
        "paired",
        "fingerprint",
    ):
        assert getattr(back, name) == getattr(rec, name), name
    assert back.address == "10.0.0.2:7"


def test_every_item_fits_and_the_whole_record_fits_a_frame():
    huge = "é" * 400  # two bytes each: a cut must not split a character
    props = encode_txt(
        PeerRecord(
            worker_id="w",
            host=huge,
            chip=huge,
            mlx_version=huge,
            orchard_version=huge,
            fingerprint=FP,
        )
    )
    assert all(len(f"{k}={v}".encode()) <= MAX_ITEM_BYTES for k, v in props.items())
    assert len(_wire(props)) <= MAX_TXT_BYTES
    assert props["trunc"] == "chip,host,mlx,ver"
    assert parse_txt(_wire(props)).valid


@pytest.mark.parametrize(
    "record, message",
    [
        (PeerRecord(worker_id="", fingerprint=FP), "worker_id"),
        (PeerRecord(worker_id="a/b", fingerprint=FP), "worker_id"),
        (PeerRecord(worker_id="w", fingerprint="XYZ"), "fingerprint"),
        (PeerRecord(worker_id="w", state="sleeping"), "state"),
    ],
)
def test_bad_own_fields_are_refused_with_the_field_named(record, message):
    with pytest.raises(ValueError, match=message):
        encode_txt(record)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"\x09id=w", "claims 9 bytes"),
        (b"\x04id=\x80", "not UTF-8"),
        (b"\x01a" * 40, "more than 32 items"),
        (b"".join(b"\xff" + bytes([c]) * 255 for c in b"abcdef"), "limit 1300"),
        (_wire({"id": "w", "pv": "1"}), "no 'fp'"),
        (_wire({"id": "w", "pv": "1", "fp": FP, "state": "asleep"}), "state"),
        (_wire({"id": "w", "pv": "1", "fp": FP, "paired": "maybe"}), "paired"),
        (b"", "no 'id'"),
    ],
)
def test_bad_wire_txt_gives_an_invalid_record_with_the_reason(raw, problem):
    rec = parse_txt(raw)
    assert not rec.valid and problem in rec.problem


def test_first_duplicate_key_wins_and_keys_ignore_case():
    props, problem = split_txt(_wire({"ID": "first"}) + _wire({"id": "second"}) + b"\x00")
    assert (props, problem) == ({"id": "first"}, "")


def test_discovery_and_trust_never_import_grpc():
    code = (
        "import sys, engine.discovery, engine.trust, engine.cli.discover; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'grpc' or m.startswith('engine.rpc')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_record_from_the_workers_describe_fields():
    info = {"worker_id": "w7", "protocol_version": "1", "hostname": "mini", "chip": "M4", "memory_bytes": 17179869184,
            "mlx_version": "0.32", "orchard_version": "0.1.0", "platform": "Darwin-arm64"}  # fmt: skip
    rec = record_from_worker_info(info, fingerprint=FP, paired=True)
    assert (rec.worker_id, rec.host, rec.chip, rec.memory_bytes, rec.paired) == (
        "w7",
        "mini",
        "M4",
        16 << 30,
        True,
    )
    assert parse_txt(_wire(encode_txt(rec))).valid

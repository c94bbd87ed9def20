"""A network worker reads only what the coordinator shipped (or a Hugging Face id)."""

from __future__ import annotations

import pytest

from engine.config import JobSpec
from engine.rpc.paired_client import NotPairedError, find_pinned, split_address
from engine.trust import SpoofedPeerError, new_peer, open_trust_home
from engine.worker.confine import check_confined
from engine.worker.errors import InvalidRequest

SHA = "ab" * 32


def _toml(**over: str) -> str:
    return JobSpec().with_overrides([f'{k}="{v}"' for k, v in over.items()]).to_toml()


def test_shipped_files_and_hub_ids_pass():
    check_confined(_toml(**{"model.path": "/anything"}), {"dataset": SHA, "model/config.json": SHA})
    check_confined(_toml(**{"model.path": "mlx-community/Qwen2.5-0.5B"}), {"dataset": SHA})


@pytest.mark.parametrize(
    ("over", "files", "field"),
    [
        ({"data.path": "/etc/passwd"}, {}, "data.path"),
        ({"data.valid_path": "/home/me/v.jsonl"}, {"dataset": SHA}, "data.valid_path"),
        ({"model.path": "/Users/me/secret-model"}, {"dataset": SHA}, "model.path"),
        ({"model.path": "../../outside"}, {"dataset": SHA}, "model.path"),
        ({"model.path": "~/models/x"}, {"dataset": SHA}, "model.path"),
    ],
)
def test_paths_on_the_workers_disk_are_refused(over, files, field):
    with pytest.raises(InvalidRequest, match=field):
        check_confined(_toml(**over), files)


def test_split_address():
    assert split_address("10.0.0.5:6000") == ("10.0.0.5", 6000)
    assert split_address("mac-mini.local") == ("mac-mini.local", 50051)
    assert split_address("[fe80::1]:7000") == ("fe80::1", 7000)
    for bad in ("", ":5", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            split_address(bad)


def test_find_pinned_by_certificate_then_by_place(tmp_path):
    home = open_trust_home(tmp_path / "trust")
    fp_a, fp_b = "a" * 64, "b" * 64
    home.workers().put(new_peer("w1", fp_a, b"s" * 32, name="10.0.0.5:50051"))
    assert find_pinned(home, "10.0.0.9:1234", fp_a).peer_id == "w1"  # moved: still it
    with pytest.raises(SpoofedPeerError):
        find_pinned(home, "10.0.0.5", fp_b)  # its place, another certificate
    with pytest.raises(NotPairedError, match="run `orchard pair 10.0.0.7:50051`"):
        find_pinned(home, "10.0.0.7:50051", fp_b)

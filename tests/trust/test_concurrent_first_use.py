"""Two pairings at once: the first use of a trust folder from several threads (the app's
pairing dialog and a CLI, or two pairings in one engine) makes one identity and one id, and
paired peers written at the same time are all kept."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from engine.trust.identity import load_or_create_identity, load_or_create_machine_id
from engine.trust.peer_store import PairedPeer, PeerStore

N = 8


def _at_once(fn, n: int = N) -> list:
    gate = threading.Barrier(n)

    def run(i):
        gate.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_one_identity_when_many_threads_make_it_at_once(tmp_path):
    ids = _at_once(lambda _: load_or_create_identity(tmp_path / "trust"))
    assert len({i.fingerprint for i in ids}) == 1
    assert len({i.key_pem for i in ids}) == 1
    again = load_or_create_identity(tmp_path / "trust")  # the key on disk matches its cert
    assert again.fingerprint == ids[0].fingerprint
    assert not [p.name for p in (tmp_path / "trust").iterdir() if ".tmp" in p.name]


def test_one_machine_id_when_many_threads_make_it_at_once(tmp_path):
    ids = _at_once(lambda _: load_or_create_machine_id(tmp_path))
    assert len(set(ids)) == 1
    assert (tmp_path / "id").read_text() == ids[0]


def _peer(i: int) -> PairedPeer:
    return PairedPeer(f"w{i}", f"{i:064x}", "ab" * 16, name=f"worker {i}")


def test_peers_paired_at_once_from_separate_stores_are_all_kept(tmp_path):
    path = tmp_path / "workers.json"
    stores = [PeerStore(path) for _ in range(N)]  # as separate processes would hold them
    _at_once(lambda i: stores[i].put(_peer(i)))
    assert [p.peer_id for p in PeerStore(path).all()] == sorted(f"w{i}" for i in range(N))


def test_peers_paired_at_once_from_separate_processes_are_all_kept(tmp_path):
    path = tmp_path / "workers.json"
    code = (
        "import sys; from engine.trust.peer_store import PairedPeer, PeerStore\n"
        "s = PeerStore(sys.argv[1])\n"
        "for k in range(20):\n"
        "    i = int(sys.argv[2]) * 100 + k\n"
        "    s.put(PairedPeer(f'w{i}', f'{i:064x}', 'ab' * 16))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(j)]) for j in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert len(PeerStore(path).all()) == 60

"""Identity files, codes, the wrong-code limiter and the peer store, without a network."""

from __future__ import annotations

import stat

import pytest

from engine.trust import (
    CodeError,
    CodeStore,
    IdentityError,
    PeerStore,
    PeerStoreError,
    RateLimited,
    SpoofedPeerError,
    WrongCodeLimiter,
    load_or_create_identity,
    new_peer,
    normalize_code,
    open_trust_home,
)
from engine.trust.identity import fingerprint_of_pem


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_makes_a_private_identity_and_keeps_it(tmp_path):
    home = open_trust_home(tmp_path / "data")
    tls = tmp_path / "data" / "tls"
    assert _mode(tls / "key.pem") == 0o600 and _mode(tls / "cert.pem") == 0o600
    assert _mode(tmp_path / "data" / "id") == 0o600
    assert home.identity.fingerprint == fingerprint_of_pem(home.identity.cert_pem)
    again = open_trust_home(tmp_path / "data")
    assert (again.identity.fingerprint, again.machine_id) == (
        home.identity.fingerprint,
        home.machine_id,
    )
    assert load_or_create_identity(tmp_path / "other").fingerprint != home.identity.fingerprint


def test_broken_identity_files_are_named(tmp_path):
    a = load_or_create_identity(tmp_path / "a")
    load_or_create_identity(tmp_path / "b")
    (tmp_path / "b" / "cert.pem").write_bytes(a.cert_pem)
    with pytest.raises(IdentityError, match="does not match"):
        load_or_create_identity(tmp_path / "b")
    (tmp_path / "a" / "key.pem").unlink()
    with pytest.raises(IdentityError, match="key.pem: missing"):
        load_or_create_identity(tmp_path / "a")


def test_codes_are_forgiving_to_type_and_strict_to_check(tmp_path):
    assert normalize_code("7kq2-m9xd") == "7KQ2M9XD"
    assert normalize_code("O1L0 abcd") == "0110ABCD"  # O->0, I/L->1
    with pytest.raises(CodeError, match="expected 8 characters"):
        normalize_code("7KQ2")
    with pytest.raises(CodeError, match="'U'"):
        normalize_code("UUUU1234")
    store = CodeStore(tmp_path)
    first = store.current()
    assert store.current() == first and _mode(tmp_path / "pairing_code") == 0o600
    assert store.rotate() != first  # 40 random bits: equal by chance ~1e-12


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_codes_back_off_exponentially_then_lock_out():
    clock, lockouts = Clock(), []
    lim = WrongCodeLimiter(
        max_failures=4,
        base_delay_s=1.0,
        lockout_s=300,
        on_lockout=lambda: lockouts.append(1),
        clock=clock,
    )
    waits = []
    for _ in range(3):
        lim.check()
        lim.failure()
        with pytest.raises(RateLimited) as e:
            lim.check()
        waits.append(e.value.retry_after_s)
        clock.now += e.value.retry_after_s
    assert waits == [1.0, 2.0, 4.0] and not lockouts
    lim.check()
    lim.failure()
    assert lockouts == [1]
    clock.now += 299
    with pytest.raises(RateLimited) as e:
        lim.check()
    assert e.value.locked and e.value.retry_after_s == pytest.approx(1.0)
    clock.now += 1
    lim.check()  # lockout over: a fresh start
    assert lim.failures == 0


def test_peer_store_pins_and_flags_a_spoof(tmp_path):
    store = PeerStore(tmp_path / "workers.json")
    store.put(new_peer("w1", "aa" * 32, b"s" * 32, cert_pem="PEM"))
    assert _mode(tmp_path / "workers.json") == 0o600
    reloaded = PeerStore(tmp_path / "workers.json")
    assert reloaded.get("w1").secret == b"s" * 32
    assert reloaded.verdict("w1", "aa" * 32) == "paired"
    assert reloaded.verdict("w1", "bb" * 32) == "spoofed"
    assert reloaded.verdict("w2", "bb" * 32) == "unpaired"
    with pytest.raises(SpoofedPeerError, match="w1"):
        reloaded.require_pinned("w1", "bb" * 32)
    with pytest.raises(ValueError, match="fingerprint"):
        store.put(new_peer("w3", "short", b"x"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PeerStoreError, match="bad.json"):
        PeerStore(tmp_path / "bad.json")

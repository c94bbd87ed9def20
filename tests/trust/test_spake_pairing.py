"""The SPAKE2 exchange and the worker's pairing desk, without a network."""

from __future__ import annotations

import pytest

from engine.trust import (
    ClientPairing,
    PairingError,
    WorkerPairing,
    WrongCodeLimiter,
    open_trust_home,
)

CLIENT_FP, WORKER_FP, OTHER_FP = "11" * 32, "22" * 32, "33" * 32


def _run(client_code: str, worker_code: str, client_sees: str = WORKER_FP) -> tuple[bytes, bytes]:
    client = ClientPairing(client_code, "coord", CLIENT_FP, client_sees)
    worker = WorkerPairing(worker_code, "coord", CLIENT_FP, "w1", WORKER_FP, client.start())
    confirm, secret = worker.check(client.confirm("w1", worker.msg_b))
    return client.finish(confirm), secret


def test_same_code_gives_both_sides_the_same_fresh_secret():
    a, b = _run("ABCD1234", "ABCD1234")
    assert a == b and len(a) == 32
    assert _run("ABCD1234", "ABCD1234")[0] != a  # fresh randomness every pairing


def test_wrong_code_fails_at_the_worker():
    with pytest.raises(PairingError) as e:
        _run("ABCD1234", "ABCD1235")
    assert e.value.kind == "wrong_code"


def test_man_in_the_middle_certificate_breaks_pairing_even_with_the_right_code():
    # The client saw the relay's certificate, the worker binds its own: keys differ.
    with pytest.raises(PairingError) as e:
        _run("ABCD1234", "ABCD1234", client_sees=OTHER_FP)
    assert e.value.kind == "wrong_code"


@pytest.mark.parametrize("msg", [b"", b"x" * 32, b"B" + b"\x00" * 32, b"A" + b"\xff" * 32])
def test_malformed_spake_messages_are_invalid_not_crashes(msg):
    with pytest.raises(PairingError) as e:
        WorkerPairing("ABCD1234", "coord", CLIENT_FP, "w1", WORKER_FP, msg)
    assert e.value.kind == "invalid"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _attempt(responder, code: str, client_id: str = "coord") -> bytes:
    client = ClientPairing(code, client_id, CLIENT_FP, responder.identity.fingerprint)
    sid, msg_b = responder.start(
        client_id, "Mac", CLIENT_FP, responder.identity.fingerprint, client.start()
    )
    return client.finish(responder.finish(sid, client.confirm(responder.worker_id, msg_b)))


def test_responder_locks_out_after_wrong_codes_and_makes_a_new_code(tmp_path):
    clock = Clock()
    home = open_trust_home(tmp_path)
    responder = home.responder(
        WrongCodeLimiter(max_failures=3, base_delay_s=1, lockout_s=60, clock=clock)
    )
    old_code = responder.codes.current()
    for _ in range(3):
        with pytest.raises(PairingError) as e:
            _attempt(responder, "ZZZZZZZZ")
        assert e.value.kind == "wrong_code"
        clock.now += 10
    with pytest.raises(PairingError) as e:
        _attempt(responder, old_code)  # even the right (old) code is refused while locked
    assert e.value.kind == "rate_limited" and e.value.retry_after_s > 0
    new_code = responder.codes.current()
    assert new_code != old_code
    clock.now += 60
    with pytest.raises(PairingError):
        _attempt(responder, old_code)  # the old code is dead
    clock.now += 10
    secret = _attempt(responder, new_code)
    assert home.clients().get("coord").secret == secret


def test_abandoned_sessions_count_as_wrong_guesses(tmp_path):
    clock = Clock()
    responder = open_trust_home(tmp_path).responder(
        WrongCodeLimiter(max_failures=10, base_delay_s=5, clock=clock)
    )
    responder.clock = clock
    client = ClientPairing("ABCD1234", "coord", CLIENT_FP, responder.identity.fingerprint)
    responder.start("coord", "Mac", CLIENT_FP, "", client.start())
    clock.now += responder.session_ttl_s + 1
    with pytest.raises(PairingError) as e:
        responder.start(
            "coord", "Mac", CLIENT_FP, "", ClientPairing("ABCD1234", "coord", CLIENT_FP, "").start()
        )
    assert e.value.kind == "rate_limited" and responder.limiter.failures == 1


@pytest.mark.parametrize(
    "args, kind",
    [
        (("", "n", CLIENT_FP, ""), "invalid"),
        (("../x", "n", CLIENT_FP, ""), "invalid"),
        (("coord", "n", "nothex", ""), "invalid"),
        (("coord", "n", CLIENT_FP, OTHER_FP), "fingerprint"),
    ],
)
def test_bad_pairing_requests_are_named(tmp_path, args, kind):
    responder = open_trust_home(tmp_path).responder()
    with pytest.raises(PairingError) as e:
        responder.start(*args, ClientPairing("ABCD1234", "c", CLIENT_FP, WORKER_FP).start())
    assert e.value.kind == kind

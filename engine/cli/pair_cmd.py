"""`orchard pair HOST[:PORT] [--code CODE]`: pair this machine with a worker.

Runs the SPAKE2 exchange with the code the worker shows on its screen, then keeps the
worker's pinned certificate and the shared secret in this machine's trust folder
(``workers.json``), which the coordinator reads to reach the worker over pinned TLS.
"""

from __future__ import annotations

import logging
import sys

from engine.rpc.paired_client import split_address
from engine.rpc.pairing_service import pair_with_worker
from engine.rpc.tls import PeerCertificateError
from engine.trust import CodeError, PairingError, open_trust_home

log = logging.getLogger(__name__)


def _ask_code(target: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()  # scripts may pipe the code in
        if not line.strip():
            raise CodeError("pairing code: none given (pass --code or type it when asked)")
        return line
    return input(f"Pairing code shown by the worker at {target}: ")


def pair_main(target: str, code: str | None, expected_fingerprint: str = "") -> int:
    """Pair with the worker at ``target``; prompts for the code when ``code`` is None.

    Returns 0 when paired, 1 when the worker refused (wrong code, locked, spoofed), 2 for bad
    input or an unreachable worker. Messages go to stderr; the code is never printed."""
    try:
        host, port = split_address(target)
        entered = code if code is not None else _ask_code(target)
        home = open_trust_home()
        peer = pair_with_worker(
            host, port, entered, home.identity, home.machine_id, home.workers(),
            expected_fingerprint=expected_fingerprint,
        )  # fmt: skip
    except (ValueError, CodeError) as e:  # CodeError is a ValueError: a mistyped code
        sys.stderr.write(f"orchard pair: {e}\n")
        return 2
    except PeerCertificateError as e:
        sys.stderr.write(f"orchard pair: cannot reach the worker: {e}\n")
        return 2
    except PairingError as e:
        hint = {
            "wrong_code": "check the code on the worker's screen and try again",
            "fingerprint": "the machine answering is not the one advertised; not paired",
        }.get(e.kind, "")
        sys.stderr.write(f"orchard pair: {e}{f' ({hint})' if hint else ''}\n")
        return 2 if e.kind == "unreachable" else 1
    except KeyboardInterrupt:
        sys.stderr.write("orchard pair: aborted\n")
        return 130
    sys.stdout.write(
        f"paired with worker {peer.peer_id} at {host}:{port} "
        f"(certificate {peer.fingerprint[:16]}... pinned)\n"
    )
    sys.stdout.flush()
    return 0

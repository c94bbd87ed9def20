"""The sealed stream: a network worker's bulk socket, AES-256-GCM records keyed by the ticket.

Why not TLS on this socket: TLS records carry at most 16 KiB, and Python's ssl reads one per
call (an SSL_read, two read() syscalls and a Python call each). Measured on this project's
2-core test machine, receiving over TLS cost ~0.7 s of CPU per GiB, the same AES-256-GCM in
256 KiB records ~0.3 s; the TLS bulk socket moved a model slower than gRPC did. kTLS would
fix it on Linux only, and Orchard runs on Macs.

Keys: the ticket is 32 random bytes the worker gave the coordinator in OpenFile's reply, over
the gRPC channel (TLS pinned to the worker's certificate, every call signed with the secret
of the pairing). Only these two hold it, it admits one connection, and it expires in a
minute. HKDF-SHA256 turns it into one key per direction. Forward secrecy is the TLS
channel's: the ticket never crossed anything else.

The stream, after ``MAGIC_SEALED`` and sha256(ticket) in the clear (the worker's lookup key;
it tells an eavesdropper nothing of the ticket):
- every message, both ways, is a record: its plaintext length (4 bytes, big-endian, also the
  AEAD's associated data), then the ciphertext and its 16-byte tag;
- a record's nonce is its number in its direction (0, 1, ...), never sent: a record dropped,
  replayed, reordered, altered, reflected back or taken from another stream fails its tag;
- the coordinator's record 0 proves it holds the key before the worker spends the ticket or
  touches the disk; the worker's record 0 (``GO`` or a refusal) proves the worker is the one
  the coordinator paired with (a stand-in cannot know the ticket).
A record that fails its tag ends the stream (SealBroken): nothing of it is used.
AES-GCM's per-key limit (RFC 8446 5.5: about 2^34.5 blocks at a 2^-57 margin, some 380 GiB)
is far above a model's file; one key serves one file from one offset.
"""

from __future__ import annotations

import hashlib
import socket

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC_SEALED = b"OBS1"
RECORD_BYTES = 256 * 1024  # the most plaintext one record carries
TAG_BYTES = 16
_HEADER = 4
_INFO = b"orchard bulk socket: sealed stream v1"


class SealBroken(ConnectionError):
    """A record that is not the peer's (wrong key, altered, out of place) or too long."""


def ticket_id(ticket: bytes) -> bytes:
    """What the stream names its ticket by, in the clear: a hash, never the ticket."""
    return hashlib.sha256(ticket).digest()


class Sealed:
    """Records over ``sock`` with the keys of ``ticket``, from the ``coordinator``'s end or
    the ``worker``'s. Not thread-safe: one thread seals at a time and one opens (a file's
    data phase hands them to threads of its own, engine/rpc/sealed_pipeline.py)."""

    def __init__(self, sock: socket.socket, ticket: bytes, side: str):
        keys = HKDF(algorithm=SHA256(), length=64, salt=None, info=_INFO).derive(ticket)
        to_worker, to_coordinator = AESGCM(keys[:32]), AESGCM(keys[32:])
        if side == "coordinator":
            self._seal, self._open = to_worker, to_coordinator
        elif side == "worker":
            self._seal, self._open = to_coordinator, to_worker
        else:
            raise ValueError(f"side {side!r}: expected 'coordinator' or 'worker'")
        self.sock = sock
        self._sent = self._received = 0
        self._out = memoryview(bytearray(_HEADER + RECORD_BYTES + TAG_BYTES))
        self._in = memoryview(bytearray(RECORD_BYTES + TAG_BYTES))

    def send(self, data: bytes | memoryview) -> None:
        """One record of ``data`` (at most RECORD_BYTES)."""
        self.sock.sendall(self._out[: self.seal_into(data, self._out)])

    def seal_into(self, data: bytes | memoryview, out: memoryview) -> int:
        """The next record of ``data`` (at most RECORD_BYTES) written into ``out`` (header,
        ciphertext, tag); its length on the wire. The record's number is spent: it must be
        sent, in this order, before the next one sealed."""
        n = len(data)
        if n > RECORD_BYTES:
            raise ValueError(f"a record carries at most {RECORD_BYTES} bytes, not {n}")
        header = n.to_bytes(_HEADER, "big")
        end = _HEADER + n + TAG_BYTES
        out[:_HEADER] = header
        self._seal.encrypt_into(_nonce(self._sent), data, header, out[_HEADER:end])
        self._sent += 1
        return end

    @staticmethod
    def sealed_size(nbytes: int, record: int = RECORD_BYTES) -> int:
        """Bytes on the wire for ``nbytes`` of plaintext in records of ``record`` bytes."""
        records = max(1, -(-nbytes // record))
        return nbytes + records * (_HEADER + TAG_BYTES)

    def receive_into(self, buf: memoryview, limit: int = RECORD_BYTES) -> int:
        """The next record's plaintext into ``buf``; its length. A record longer than
        ``limit`` (or ``buf``) or failing its tag raises SealBroken; the peer closing raises
        EOFError; a socket error its OSError."""
        header = bytes(_recv_into(self.sock, memoryview(bytearray(_HEADER))))
        n = int.from_bytes(header, "big")
        if n > min(limit, len(buf), RECORD_BYTES):
            raise SealBroken(f"a record of {n} bytes, more than the {min(limit, len(buf))} expected")  # fmt: skip
        sealed = _recv_into(self.sock, self._in[: n + TAG_BYTES])
        try:
            self._open.decrypt_into(_nonce(self._received), sealed, header, buf[:n])
        except InvalidTag:
            raise SealBroken(f"record {self._received} failed its authentication tag") from None
        self._received += 1
        return n

    def send_line(self, line: str) -> None:
        self.send(line.encode()[:RECORD_BYTES])

    def receive_line(self, limit: int) -> str:
        buf = memoryview(bytearray(limit))
        n = self.receive_into(buf, limit)
        return bytes(buf[:n]).decode(errors="replace").strip()


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def _recv_into(sock: socket.socket, view: memoryview) -> memoryview:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError(f"the stream ended {len(view) - got} bytes into a record")
        got += n
    return view

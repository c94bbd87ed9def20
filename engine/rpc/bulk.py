"""The bulk socket: a file's bytes beside gRPC, at the speed of the link.

Python gRPC streams a file at a few hundred MB/s, CPU-bound: each 1 MiB chunk is read into
a bytes object, copied into a protobuf message, serialized, framed by HTTP/2 and parsed back
into Python objects on the worker, one Python iteration per chunk on both ends. A model's
shards (GBs) travel instead over a socket the worker opens beside its gRPC server:

1. the coordinator calls ``OpenFile(sha256, name, size)`` on the authenticated gRPC channel
   (the run token, or signed calls over pinned TLS); the worker answers with the bytes of that
   file it already holds (where a broken stream stopped), its bulk port and a one-time ticket
   bound to that file, that offset and that size, valid for ``TICKET_TTL_S``;
2. the coordinator connects and sends the file from that offset once the worker said ``GO``
   (it checked the ticket and the name and opened the partial file). To a local worker (plain
   TCP, as its gRPC is): ``MAGIC`` + ticket, then ``sendfile`` from the page cache, no copy in
   Python. To a paired network worker: the sealed stream (engine/rpc/sealed.py: AES-256-GCM
   records keyed by the ticket, which only the pinned, authenticated gRPC channel carried;
   sealed and opened on threads of their own, engine/rpc/sealed_pipeline.py), ending with the
   file's checksum when OpenFile asked for it there (``checksum_at_end``);
3. the worker reads into a few reused buffers, writes them to the partial file, hashes them
   (engine/worker/incoming.py: the xxh3-128 checksum the coordinator sent with the sha256,
   engine/worker/checksum.py, or else the sha256) and answers one line once the hash matched
   and the file is published: ``OK <size>``, or ``ERR <grpc status name> <message>``.

The worker never reads more than the announced size, writes only under its file cache
(the name is checked as PutFile checks it), keeps a broken stream's bytes for a resume, and
drops a connection that shows no valid ticket within ``HELLO_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from engine.rpc.sealed import MAGIC_SEALED, RECORD_BYTES, SealBroken, Sealed, ticket_id
from engine.rpc.sealed_pipeline import receive_sealed, send_sealed
from engine.worker.checksum import ALGORITHM, new_checksum, parse_checksum, tagged
from engine.worker.errors import InvalidRequest, OutOfOrder
from engine.worker.files import FileStore
from engine.worker.incoming import Incoming, Superseded

log = logging.getLogger(__name__)

MAGIC = b"OBK1"
TICKET_BYTES = 32
TICKET_TTL_S = 60.0  # from OpenFile to the connection
MAX_TICKETS = 64  # tickets waiting for their connection; the oldest goes first
HELLO_TIMEOUT_S = 10.0  # the ticket (and the sealed stream's first record), before the disk
IDLE_TIMEOUT_S = 60.0  # a stream silent this long is broken (its bytes are kept)
MAX_CONNECTIONS = 8
# The worker reads into small buffers that stay in the CPU cache from recv to write to hash:
# measured here, 4 MiB buffers made the write of each one 2-10x slower than 256 KiB ones.
# A sealed record fills one (RECORD_BYTES).
BUFFER_BYTES = RECORD_BYTES
BUFFERS = 16  # per connection: 4 MiB in flight, so the sha256 thread's hiccups never stall reading
SEGMENT_BYTES = 16 * 1024 * 1024  # the sender reports progress after each
MAX_REPLY_BYTES = 4096
CONNECT_TIMEOUT_S = 10.0  # a firewalled bulk port falls back to gRPC after this
LATE_REPLY_S = 2.0  # a broken stream's sender waits this long for the worker's why


class BulkRefused(Exception):
    """The worker refused the file (``code`` is a grpc status name, ``details`` why)."""

    def __init__(self, code: str, details: str):
        self.code, self.details = code, details
        super().__init__(f"{code}: {details}")


class BulkBroken(ConnectionError):
    """The stream broke after the worker took the ticket: ask OpenFile again and resume."""


class BulkUnavailable(ConnectionError):
    """The bulk socket cannot be reached or is not the pinned worker: use the gRPC stream."""


@dataclass(frozen=True)
class _Ticket:
    sha256: str
    name: str
    size: int
    offset: int
    expires: float
    checksum: str | None  # xxh3-128 hex to check the file against (None: its sha256)
    caller: str  # whose word the sha256 is when the checksum is checked (engine/worker/files.py)
    secret: bytes  # the ticket itself: a sealed stream's keys come from it
    checksum_at_end: bool  # the checksum comes in the sealed stream's last record


class BulkServer:
    """The worker's bulk listener (bound on first use, on the gRPC server's host)."""

    def __init__(self, store: FileStore, host: str, sealed: bool = False):
        """``sealed``: streams come sealed (a network worker's, engine/rpc/sealed.py), never
        plain; else plain, never sealed (a local worker's)."""
        self.store, self.host, self.sealed = store, host.strip("[]"), sealed
        self._lock = threading.Lock()
        self._tickets: dict[bytes, _Ticket] = {}  # sha256(ticket) -> what it admits
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._listener: socket.socket | None = None
        self._closed = False

    def expect(
        self, sha256: str, name: str, size: int, offset: int, checksum: str | None = None,
        caller: str = "", checksum_at_end: bool = False,
    ) -> tuple[int, bytes]:  # fmt: skip
        """A ticket admitting one connection that sends this file from ``offset``:
        (port, ticket). ``checksum``/``caller``: see FileStore.begin; ``checksum_at_end``:
        the checksum comes in the sealed stream's last record, after the bytes."""
        if checksum_at_end and (checksum is not None or not self.sealed):
            raise ValueError("a checksum at the end is for a sealed stream without one")
        port = self._listen()
        ticket = secrets.token_bytes(TICKET_BYTES)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, t in self._tickets.items() if t.expires < now]:
                del self._tickets[key]
            while len(self._tickets) >= MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            # filed by its hash: no lookup's time depends on a secret's bytes
            self._tickets[ticket_id(ticket)] = _Ticket(
                sha256, name, size, offset, now + TICKET_TTL_S, checksum, caller, ticket,
                checksum_at_end,
            )  # fmt: skip
        return port, ticket

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _listen(self) -> int:
        with self._lock:
            if self._closed:
                raise OutOfOrder("the worker is shutting down")
            if self._listener is None:
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                self._listener = socket.create_server((self.host, 0), family=family, backlog=16)
                self._listener.settimeout(0.5)  # the accept loop notices close() this often
                threading.Thread(
                    target=self._accept, args=(self._listener,), name="bulk-accept", daemon=True
                ).start()
                log.info("bulk socket on %s:%d", self.host, self._listener.getsockname()[1])
            return self._listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                log.warning(
                    "bulk: refused a connection from %s: %d already open", peer, MAX_CONNECTIONS
                )
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn, peer), name="bulk-recv", daemon=True
            ).start()

    def _take(self, key: bytes, ticket: _Ticket | None = None) -> _Ticket | None:
        """The ticket filed under ``key`` (if ``ticket`` is given, only that one), spent."""
        with self._lock:
            t = self._tickets.get(key)
            if t is None or (ticket is not None and t is not ticket):
                return None
            del self._tickets[key]
        return t if t.expires >= time.monotonic() else None

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        try:
            conn.settimeout(HELLO_TIMEOUT_S)
            magic = _recv_exactly(conn, len(MAGIC))
            if magic != (MAGIC_SEALED if self.sealed else MAGIC):
                log.warning("bulk: %s sent no %s stream", peer[0], "sealed" if self.sealed else "plain")  # fmt: skip
                _reply(conn, "ERR INVALID_ARGUMENT not an Orchard bulk stream of this worker")
                return
            if self.sealed:
                opened = self._open_sealed(conn, peer)
                if opened is None:  # no reply: without the key, nothing can be said safely
                    return
                ticket, sealed = opened
                reply: Callable[[str], None] = partial(_send_line, sealed.send)
            else:
                sealed = None
                ticket = self._take(ticket_id(_recv_exactly(conn, TICKET_BYTES)))
                if ticket is None:
                    log.warning("bulk: %s showed no valid ticket", peer[0])
                    _reply(conn, "ERR UNAUTHENTICATED unknown or expired ticket: ask OpenFile again")  # fmt: skip
                    return
                reply = partial(_send_line, conn.sendall)
            try:
                incoming = self.store.begin(ticket.sha256, ticket.name, ticket.offset,
                                            ticket.size, ticket.checksum, ticket.caller,
                                            ticket.checksum_at_end)  # fmt: skip
            except InvalidRequest as e:
                reply(f"ERR INVALID_ARGUMENT {e}")
                return
            except OutOfOrder as e:
                reply(f"ERR FAILED_PRECONDITION {e}")
                return
            except OSError as e:  # the worker's disk, not the stream: say so
                log.exception("bulk: cannot receive %s", ticket.name)
                reply(f"ERR INTERNAL {ticket.name}: {e}")
                return
            reply("GO")  # only now the bytes come: a refusal never races them
            kernel_timeout(conn, IDLE_TIMEOUT_S)
            reply(_receive(incoming, conn, sealed, ticket.size))
        except (OSError, EOFError) as e:  # SealBroken too: the stream's bytes are not the peer's
            log.info("bulk: stream from %s ended: %s", peer[0], e)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def _open_sealed(self, conn: socket.socket, peer: tuple) -> tuple[_Ticket, Sealed] | None:
        """The ticket named in the clear, and the stream its key opens, once the sender's
        first record proved it holds that key; None (the ticket unspent) otherwise."""
        key = _recv_exactly(conn, TICKET_BYTES)
        with self._lock:
            ticket = self._tickets.get(key)
        if ticket is None or ticket.expires < time.monotonic():
            log.warning("bulk: %s named no valid ticket", peer[0])
            return None
        sealed = Sealed(conn, ticket.secret, "worker")
        try:
            hello = sealed.receive_line(len(MAGIC_SEALED))
        except SealBroken:
            log.warning("bulk: %s does not hold the key of the ticket it named", peer[0])
            return None
        if hello != MAGIC_SEALED.decode() or self._take(key, ticket) is None:
            return None
        return ticket, sealed


class _WriteFailed(Exception):
    """The worker's disk refused a write (full?): not the stream's fault, so said."""

    def __init__(self, error: OSError):
        self.error = error


def _receive(incoming: Incoming, conn: socket.socket, sealed: Sealed | None, size: int) -> str:
    """Read the rest of the file into ``incoming``: plain bytes, or records of the ``sealed``
    stream (opened on a thread of their own, engine/rpc/sealed_pipeline.py); the reply for
    the sender."""
    incoming.on_cancel(lambda: conn.shutdown(socket.SHUT_RDWR))  # the read ends

    def write(view: memoryview, release: Callable[[], None]) -> None:
        try:
            incoming.write(view, release=release)
        except OSError as e:
            raise _WriteFailed(e) from None

    def unblock() -> None:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RD)  # the opener's pending receive returns

    keep = True
    try:
        if sealed is not None:
            receive_sealed(sealed, size - incoming.size, BUFFER_BYTES, write, unblock)
            if incoming.checksum_at_end:  # the last record: what the sender hashed
                incoming.checksum = _trailing_checksum(sealed, incoming.name)
        else:
            _receive_plain(incoming, conn, size, write)
        _, size = incoming.finish()
        return f"OK {size}"
    except _WriteFailed as e:  # the worker's disk (full?), not the stream: say so
        return f"ERR RESOURCE_EXHAUSTED {incoming.name}: cannot write it here: {e.error}"
    except InvalidRequest as e:  # refused content: its bytes go
        keep = False
        return f"ERR INVALID_ARGUMENT {e}"
    except Superseded as e:
        return f"ERR ABORTED {e}"
    except (OSError, EOFError):
        raise  # the stream broke: the bytes so far stay for a resume
    except Exception as e:  # noqa: BLE001 - the sender gets a reason, the log the trace
        log.exception("bulk: receiving %s failed", incoming.name)
        return f"ERR INTERNAL {type(e).__name__}: {e}"
    finally:
        incoming.close(keep=keep)


def _trailing_checksum(sealed: Sealed, name: str) -> str:
    line = sealed.receive_line(MAX_REPLY_BYTES)
    checksum = parse_checksum(line)  # a malformed one is refused (InvalidRequest)
    if checksum is None:
        raise InvalidRequest(f"{name}: the stream ended with {line[:80]!r}, expected its {ALGORITHM} checksum")  # fmt: skip
    return checksum


def _receive_plain(
    incoming: Incoming, conn: socket.socket, size: int,
    write: Callable[[memoryview, Callable[[], None]], None],
) -> None:  # fmt: skip
    # last in, first out: the buffer hashed last (at once, with a checksum) is the one still
    # in the CPU's cache
    free: queue.LifoQueue[bytearray] = queue.LifoQueue()
    for _ in range(BUFFERS):
        free.put(bytearray(BUFFER_BYTES))
    while left := size - incoming.size:
        buf = free.get()  # back once the hasher is done with it
        view = memoryview(buf)[: min(BUFFER_BYTES, left)]
        got, broke = 0, None
        while got < len(view):
            try:
                n = conn.recv_into(view[got:])
            except OSError as e:
                broke = e
                break
            if not n:
                broke = EOFError(f"{incoming.name}: stream ended before byte {size}")
                break
            got += n
        write(view[:got], lambda b=buf: free.put(b))
        if broke is not None:  # every byte that came is kept for the resume
            raise broke


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def _reply(conn: socket.socket, line: str) -> None:
    _send_line(conn.sendall, line)


def _send_line(send: Callable[[bytes], None], line: str) -> None:
    """One reply line, within what the sender reads (MAX_REPLY_BYTES), plain or sealed."""
    data = (" ".join(line.split()) + "\n").encode()[: MAX_REPLY_BYTES - 1]
    send(data if data.endswith(b"\n") else data + b"\n")


# ---- the sender (the coordinator) ---------------------------------------------------------
def send_file(
    host: str,
    port: int,
    ticket: bytes,
    path: str | Path,
    offset: int,
    size: int,
    *,
    sealed: bool,
    timeout_s: float,
    on_progress: Callable[[int], None] | None = None,
    checksum_at_end: bool = False,
) -> int:
    """Send ``path[offset:size]`` with ``ticket``; the size the worker stored.

    ``sealed``: the worker's socket takes sealed streams (a paired network worker's,
    engine/rpc/sealed.py); else plain TCP and sendfile. ``checksum_at_end`` (sealed only, as
    the ticket says): the file's xxh3-128, computed as it is sealed, ends the stream. Raises
    BulkUnavailable (use gRPC), BulkBroken (resume) or BulkRefused."""
    if checksum_at_end and not sealed:
        raise ValueError("a checksum at the end is for a sealed stream")
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout_s, CONNECT_TIMEOUT_S))
        sock.settimeout(timeout_s)
    except OSError as e:
        raise BulkUnavailable(f"bulk socket {host}:{port}: {e}") from None
    stream = Sealed(sock, ticket, "coordinator") if sealed else None
    try:
        try:
            if stream is None:
                sock.sendall(MAGIC + ticket)
            else:
                sock.sendall(MAGIC_SEALED + ticket_id(ticket))
                stream.send_line(MAGIC_SEALED.decode())
            try:
                line = _read_reply(sock, stream)
            except SealBroken:  # a stand-in for the worker: it cannot know the ticket
                raise BulkUnavailable(
                    f"bulk socket {host}:{port}: its answer failed authentication: it is not "
                    "the paired worker"
                ) from None
            if line == "GO":
                kernel_timeout(sock, timeout_s)
                _send_range(sock, stream, path, offset, size, on_progress=on_progress,
                            checksum_at_end=checksum_at_end)  # fmt: skip
                line = _read_reply(sock, stream)
        except BulkUnavailable:
            raise
        except (OSError, EOFError) as e:
            line = _late_reply(sock, stream)  # the worker may have said why before it closed
            if line is None:
                raise BulkBroken(f"bulk stream to {host}:{port} broke: {e}") from None
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    status, _, rest = line.partition(" ")
    if status == "OK" and rest.isdigit():
        return int(rest)
    code, _, details = rest.partition(" ")
    if status == "ERR" and code:
        raise BulkRefused(code, details)
    raise BulkBroken(f"bulk stream to {host}:{port}: unexpected reply {line[:80]!r}")


def _send_range(
    sock: socket.socket, stream: Sealed | None, path: str | Path, offset: int, size: int, *,
    on_progress: Callable[[int], None] | None, checksum_at_end: bool = False,
) -> None:  # fmt: skip
    with open(path, "rb", buffering=0) as f:
        if stream is not None:  # sealed: read and seal on one thread, send on this one
            report = [offset + SEGMENT_BYTES]

            def on_sent(pos: int) -> None:
                if on_progress is not None and (pos >= report[0] or pos == size):
                    report[0] = pos + SEGMENT_BYTES
                    on_progress(pos)

            checksum = new_checksum() if checksum_at_end else None
            try:
                send_sealed(stream, f.fileno(), offset, size, on_sent, checksum)
            except EOFError as e:
                raise EOFError(f"{path}: {e}") from None
            if checksum is not None:
                stream.send_line(tagged(checksum.hexdigest()))
            return
        pos = offset
        while pos < size:  # plain TCP: the kernel copies page cache to socket
            count = min(SEGMENT_BYTES, size - pos)
            sent = 0
            while sent < count and (n := os.sendfile(sock.fileno(), f.fileno(), pos + sent, count - sent)):  # fmt: skip
                sent += n
            if sent != count:
                raise EOFError(f"{path}: ended at byte {pos + sent}, expected {size}")
            pos += sent
            if on_progress is not None:
                on_progress(pos)


def kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, each send or receive failing (EAGAIN) after ``seconds``
    without progress: the kernel's timeout (SO_RCVTIMEO, SO_SNDTIMEO; Linux and macOS), not
    Python's, which polls before every call and splits one sendfile into a call per socket
    buffer (measured: the bulk receiver spent 8% of its time in those polls)."""
    sock.settimeout(None)
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1e6))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        sock.setsockopt(socket.SOL_SOCKET, option, timeval)


def _read_reply(sock: socket.socket, stream: Sealed | None) -> str:
    if stream is not None:
        return stream.receive_line(MAX_REPLY_BYTES)
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(MAX_REPLY_BYTES)
        if not chunk:
            raise EOFError("the worker closed the bulk stream without a reply")
        data += chunk
        if len(data) > MAX_REPLY_BYTES:
            raise EOFError("the worker's bulk reply is too long")
    return data.decode(errors="replace").strip()


def _late_reply(sock: socket.socket, stream: Sealed | None) -> str | None:
    try:
        sock.settimeout(LATE_REPLY_S)
        return _read_reply(sock, stream)
    except (OSError, EOFError):
        return None

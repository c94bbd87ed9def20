"""The bulk socket: a file's bytes beside gRPC, at the speed of the link.

Python gRPC streams a file at a few hundred MB/s, CPU-bound: each 1 MiB chunk is read into
a bytes object, copied into a protobuf message, serialized, framed by HTTP/2 and parsed back
into Python objects on the worker, one Python iteration per chunk on both ends. A model's
shards (GBs) travel instead over a socket the worker opens beside its gRPC server:

1. the coordinator calls ``OpenFile(sha256, name, size)`` on the authenticated gRPC channel
   (the run token, or signed calls over pinned TLS); the worker answers with the bytes of that
   file it already holds (where a broken stream stopped), its bulk port and a one-time ticket
   bound to that file, that offset and that size, valid for ``TICKET_TTL_S``;
2. the coordinator connects (TLS pinned to the worker's certificate for a paired network
   worker, plain TCP for a local one, as their gRPC is), sends ``MAGIC`` + ticket, then the
   file from that offset once the worker said ``GO`` (it checked the ticket and the name and
   opened the partial file): ``sendfile`` from the page cache, no copy in Python;
3. the worker reads into a few reused buffers, writes them to the partial file, hashes them
   on another thread (engine/worker/incoming.py) and answers one line once the sha256 matched
   and the file is published: ``OK <size>``, or ``ERR <grpc status name> <message>``.

The worker never reads more than the announced size, writes only under its file cache
(the name is checked as PutFile checks it), keeps a broken stream's bytes for a resume, and
drops a connection that shows no valid ticket within ``HELLO_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import queue
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.trust.identity import CERT_FILE, CERT_NAME, KEY_FILE, Identity, fingerprint_of_der
from engine.worker.errors import InvalidRequest, OutOfOrder
from engine.worker.files import FileStore
from engine.worker.incoming import Incoming, Superseded

log = logging.getLogger(__name__)

MAGIC = b"OBK1"
TICKET_BYTES = 32
TICKET_TTL_S = 60.0  # from OpenFile to the connection
MAX_TICKETS = 64  # tickets waiting for their connection; the oldest goes first
HELLO_TIMEOUT_S = 10.0  # TLS handshake + ticket, before anything touches the disk
IDLE_TIMEOUT_S = 60.0  # a stream silent this long is broken (its bytes are kept)
MAX_CONNECTIONS = 8
# The worker reads into small buffers that stay in the CPU cache from recv to write to hash:
# measured here, 4 MiB buffers made the write of each one 2-10x slower than 256 KiB ones.
BUFFER_BYTES = 256 * 1024
BUFFERS = 16  # per connection: 4 MiB in flight, so the hasher's hiccups never stall reading
SEND_BUFFER_BYTES = 1024 * 1024  # the TLS sender reads, encrypts and sends this much at once
SEGMENT_BYTES = 16 * 1024 * 1024  # the sender reports progress after each
MAX_REPLY_BYTES = 4096
CONNECT_TIMEOUT_S = 10.0  # a firewalled bulk port falls back to gRPC after this


class BulkRefused(Exception):
    """The worker refused the file (``code`` is a grpc status name, ``details`` why)."""

    def __init__(self, code: str, details: str):
        self.code, self.details = code, details
        super().__init__(f"{code}: {details}")


class BulkBroken(ConnectionError):
    """The stream broke after the worker took the ticket: ask OpenFile again and resume."""


class BulkUnavailable(ConnectionError):
    """The bulk socket cannot be reached or is not the pinned worker: use the gRPC stream."""


def server_tls(identity: Identity) -> ssl.SSLContext:
    """The worker's side: its own certificate, the one paired clients pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(identity.folder / CERT_FILE, identity.folder / KEY_FILE)
    return ctx


@dataclass(frozen=True)
class _Ticket:
    sha256: str
    name: str
    size: int
    offset: int
    expires: float
    checksum: str | None  # xxh3-128 hex to check the file against (None: its sha256)
    caller: str  # whose word the sha256 is when the checksum is checked (engine/worker/files.py)


class BulkServer:
    """The worker's bulk listener (bound on first use, on the gRPC server's host)."""

    def __init__(self, store: FileStore, host: str, tls: ssl.SSLContext | None = None):
        self.store, self.host, self._tls = store, host.strip("[]"), tls
        self._lock = threading.Lock()
        self._tickets: dict[bytes, _Ticket] = {}  # sha256(ticket) -> what it admits
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._listener: socket.socket | None = None
        self._closed = False

    @property
    def tls(self) -> bool:
        return self._tls is not None

    def expect(
        self, sha256: str, name: str, size: int, offset: int, checksum: str | None = None,
        caller: str = "",
    ) -> tuple[int, bytes]:  # fmt: skip
        """A ticket admitting one connection that sends this file from ``offset``:
        (port, ticket). ``checksum``/``caller``: see FileStore.begin."""
        port = self._listen()
        ticket = secrets.token_bytes(TICKET_BYTES)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, t in self._tickets.items() if t.expires < now]:
                del self._tickets[key]
            while len(self._tickets) >= MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            self._tickets[_key(ticket)] = _Ticket(
                sha256, name, size, offset, now + TICKET_TTL_S, checksum, caller
            )
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

    def _take(self, ticket: bytes) -> _Ticket | None:
        with self._lock:
            t = self._tickets.pop(_key(ticket), None)
        return t if t is not None and t.expires >= time.monotonic() else None

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        try:
            conn.settimeout(HELLO_TIMEOUT_S)
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            hello = _recv_exactly(conn, len(MAGIC) + TICKET_BYTES)
            if hello[: len(MAGIC)] != MAGIC:
                _reply(conn, "ERR INVALID_ARGUMENT not an Orchard bulk stream")
                return
            ticket = self._take(hello[len(MAGIC) :])
            if ticket is None:
                log.warning("bulk: %s showed no valid ticket", peer[0])
                _reply(conn, "ERR UNAUTHENTICATED unknown or expired ticket: ask OpenFile again")
                return
            try:
                incoming = self.store.begin(ticket.sha256, ticket.name, ticket.offset,
                                            ticket.size, ticket.checksum, ticket.caller)  # fmt: skip
            except InvalidRequest as e:
                _reply(conn, f"ERR INVALID_ARGUMENT {e}")
                return
            except OutOfOrder as e:
                _reply(conn, f"ERR FAILED_PRECONDITION {e}")
                return
            except OSError as e:  # the worker's disk, not the stream: say so
                log.exception("bulk: cannot receive %s", ticket.name)
                _reply(conn, f"ERR INTERNAL {ticket.name}: {e}")
                return
            _reply(conn, "GO")  # only now the bytes come: a refusal never races them
            conn.settimeout(IDLE_TIMEOUT_S)
            _reply(conn, _receive(incoming, conn, ticket.size))
        except (OSError, ssl.SSLError, EOFError) as e:
            log.info("bulk: stream from %s ended: %s", peer[0], e)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()


def _key(ticket: bytes) -> bytes:
    """Tickets are looked up by their hash, so no lookup time depends on a secret's bytes."""
    return hashlib.sha256(ticket).digest()


def _receive(incoming: Incoming, conn: socket.socket, size: int) -> str:
    """Read the rest of the file from ``conn`` into ``incoming``; the reply for the sender."""
    # shut the socket itself (not the TLS layer another thread is reading): the read ends
    incoming.on_cancel(lambda: socket.socket.shutdown(conn, socket.SHUT_RDWR))
    # last in, first out: the buffer hashed last (at once, with a checksum) is the one still
    # in the CPU's cache
    free: queue.LifoQueue[bytearray] = queue.LifoQueue()
    for _ in range(BUFFERS):
        free.put(bytearray(BUFFER_BYTES))
    keep = True
    try:
        while left := size - incoming.size:
            buf = free.get()  # back once the hasher is done with it
            view = memoryview(buf)[: min(BUFFER_BYTES, left)]
            got, broke = 0, None
            while got < len(view) and broke is None:
                try:
                    n = conn.recv_into(view[got:])
                except (OSError, ssl.SSLError) as e:
                    broke = e
                    break
                if not n:
                    broke = EOFError(f"{incoming.name}: stream ended before byte {size}")
                got += n
            try:
                incoming.write(view[:got], release=lambda b=buf: free.put(b))
            except OSError as e:  # the worker's disk (full?), not the stream: say so
                return f"ERR RESOURCE_EXHAUSTED {incoming.name}: cannot write it here: {e}"
            if broke is not None:  # every byte that came is kept for the resume
                raise broke
        _, size = incoming.finish()
        return f"OK {size}"
    except InvalidRequest as e:  # refused content: its bytes go
        keep = False
        return f"ERR INVALID_ARGUMENT {e}"
    except Superseded as e:
        return f"ERR ABORTED {e}"
    except (OSError, ssl.SSLError, EOFError):
        raise  # the stream broke: the bytes so far stay for a resume
    except Exception as e:  # noqa: BLE001 - the sender gets a reason, the log the trace
        log.exception("bulk: receiving %s failed", incoming.name)
        return f"ERR INTERNAL {type(e).__name__}: {e}"
    finally:
        incoming.close(keep=keep)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def _reply(conn: socket.socket, line: str) -> None:
    data = (" ".join(line.split()) + "\n").encode()[: MAX_REPLY_BYTES - 1]
    conn.sendall(data if data.endswith(b"\n") else data + b"\n")


# ---- the sender (the coordinator) ---------------------------------------------------------
def send_file(
    host: str,
    port: int,
    ticket: bytes,
    path: str | Path,
    offset: int,
    size: int,
    *,
    pin: str | None,
    timeout_s: float,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``path[offset:size]`` with ``ticket``; the size the worker stored.

    ``pin``: the worker's certificate fingerprint (TLS, refused unless it matches); None for
    plain TCP. Raises BulkUnavailable (use gRPC), BulkBroken (resume) or BulkRefused."""
    try:
        raw = socket.create_connection((host, port), timeout=min(timeout_s, CONNECT_TIMEOUT_S))
        raw.settimeout(timeout_s)
    except OSError as e:
        raise BulkUnavailable(f"bulk socket {host}:{port}: {e}") from None
    sock: socket.socket = raw
    try:
        if pin is not None:
            sock = _pinned(raw, pin, host, port)
        try:
            sock.sendall(MAGIC + ticket)
            line = _read_reply(sock)
            if line == "GO":
                _send_range(sock, path, offset, size, tls=pin is not None, on_progress=on_progress)
                line = _read_reply(sock)
        except (OSError, ssl.SSLError, EOFError) as e:
            line = _late_reply(sock)  # the worker may have said why before it closed
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


def _pinned(raw: socket.socket, pin: str, host: str, port: int) -> ssl.SSLSocket:
    """TLS to the worker, accepted only if it shows the pinned certificate (there is no CA:
    the handshake proves the key, the fingerprint names the worker we paired with)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # checked below against the pin, as engine/rpc/tls.py does
    try:
        tls = ctx.wrap_socket(raw, server_hostname=CERT_NAME)
        der = tls.getpeercert(binary_form=True) or b""
    except (OSError, ssl.SSLError) as e:
        raw.close()
        raise BulkUnavailable(f"bulk socket {host}:{port}: TLS failed: {e}") from None
    if not hmac.compare_digest(fingerprint_of_der(der), pin):
        tls.close()
        raise BulkUnavailable(
            f"bulk socket {host}:{port}: shows another certificate than the paired worker's"
        )
    return tls


def _send_range(
    sock: socket.socket, path: str | Path, offset: int, size: int, *, tls: bool,
    on_progress: Callable[[int], None] | None,
) -> None:  # fmt: skip
    with open(path, "rb", buffering=0) as f:
        pos = offset
        buf = memoryview(bytearray(SEND_BUFFER_BYTES)) if tls else None
        while pos < size:
            count = min(SEGMENT_BYTES, size - pos)
            if buf is None:  # plain TCP: the kernel copies page cache to socket
                sent = sock.sendfile(f, offset=pos, count=count)
            else:  # TLS encrypts in user space: read into one buffer, send it
                sent = 0
                while sent < count:
                    n = f.readinto(buf[: min(len(buf), count - sent)])
                    if not n:
                        break
                    sock.sendall(buf[:n])
                    sent += n
            if sent != count:
                raise EOFError(f"{path}: ended at byte {pos + sent}, expected {size}")
            pos += sent
            if on_progress is not None:
                on_progress(pos)


def _read_reply(sock: socket.socket) -> str:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(MAX_REPLY_BYTES)
        if not chunk:
            raise EOFError("the worker closed the bulk stream without a reply")
        data += chunk
        if len(data) > MAX_REPLY_BYTES:
            raise EOFError("the worker's bulk reply is too long")
    return data.decode(errors="replace").strip()


def _late_reply(sock: socket.socket) -> str | None:
    try:
        sock.settimeout(2.0)
        return _read_reply(sock)
    except (OSError, ssl.SSLError, EOFError):
        return None

"""A sealed stream's data phase on two threads a side: sealing beside sending, opening beside
writing.

One thread doing read, seal, send in turn leaves a core idle while it waits for each: the
sealed sender cost 0.5-0.75 s/GiB against sendfile's 0.06, and the stream ran at half of raw
TCP. AES-GCM (cryptography releases the GIL for it), ``preadv``, ``send`` and ``recv`` all
run without the GIL, so here:

- the sender's ``sealer`` thread reads a batch of records' plaintext into a reused buffer
  (``os.preadv``) and seals each record into a reused output buffer (header, ciphertext and
  tag back to back, ``encrypt_into``: no bytes object made), while the calling thread sends
  the batch before (one ``sendall`` a batch);
- the receiver's ``opener`` thread receives and opens records into reused buffers
  (``Sealed.receive_into``), while the calling thread writes and checksums the ones before.

The wire is the sealed stream's (engine/rpc/sealed.py), record for record: the same keys,
nonces (each direction's record count, kept by the one thread that seals or opens), header as
associated data and limits; a peer of either kind reads the other. A few buffers (``SLOTS``)
bound what is in flight; the threads end, joined, however the transfer ends (done, a bad
record, a closed socket, the caller's callback raising), so none outlives its transfer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.rpc.sealed import RECORD_BYTES, Sealed

BATCH_RECORDS = 4  # records sealed into one buffer and sent by one sendall (1 MiB)
SLOTS = 4  # sealed batches in flight on the sender; opened records on the receiver, times 4
_STOP = object()


def send_sealed(
    stream: Sealed, fd: int, pos: int, end: int, on_sent: Callable[[int], None],
    checksum: Any = None,
) -> None:  # fmt: skip
    """Seal and send the bytes ``pos:end`` of the file ``fd`` as records of RECORD_BYTES;
    ``on_sent(position)`` after each batch sent (it may raise: the transfer stops). Raises
    EOFError if the file ends early, OSError if the socket fails. ``checksum``: a hash
    object (``update``) fed the file's bytes from 0 to ``end``, those sent as they are
    sealed (still in the CPU's cache), those before ``pos`` read first."""
    sock = stream.sock
    free: queue.SimpleQueue = queue.SimpleQueue()  # empty output buffers, _STOP: give up
    full: queue.SimpleQueue = queue.SimpleQueue()  # (buffer, bytes to send, new pos) | error
    batch = BATCH_RECORDS * RECORD_BYTES
    for _ in range(SLOTS):
        free.put(memoryview(bytearray(stream.sealed_size(batch, RECORD_BYTES))))
    stopped = threading.Event()

    def seal() -> None:
        plain = memoryview(bytearray(batch))
        at = pos
        try:
            if checksum is not None:
                _hash_range(checksum, fd, 0, pos, plain)
            while at < end:
                out = free.get()
                if out is _STOP or stopped.is_set():
                    return
                got = _read_at(fd, plain[: min(batch, end - at)], at, end)
                used = 0
                for r in range(0, got, RECORD_BYTES):
                    used += stream.seal_into(plain[r : min(r + RECORD_BYTES, got)], out[used:])
                if checksum is not None:
                    checksum.update(plain[:got])
                at += got
                full.put((out, used, at))
        except BaseException as e:  # noqa: BLE001 - raised by the sending thread
            full.put(e)

    def stop() -> None:
        stopped.set()
        free.put(_STOP)

    with _running(seal, "sealer", stop=stop):
        at = pos
        while at < end:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            out, used, at = item
            sock.sendall(out[:used])
            free.put(out)
            on_sent(at)


def receive_sealed(
    stream: Sealed, size: int, buffer_bytes: int, write: Callable[[memoryview, Callable[[], None]], None],
    unblock: Callable[[], None],
) -> None:  # fmt: skip
    """Receive ``size`` bytes of records, opened on a thread of their own, and hand each
    record's plaintext to ``write(view, release)`` in order (``release()`` once the view may
    be reused). ``unblock()`` must make a pending receive return (shut the socket's reading
    side): it is called if ``write`` raises, before the thread is joined. Raises what the
    stream met (SealBroken, EOFError, OSError) after every record before it was written."""
    free: queue.SimpleQueue = queue.SimpleQueue()
    opened: queue.SimpleQueue = queue.SimpleQueue()  # (buffer, n) | error | None: the end
    for _ in range(SLOTS * BATCH_RECORDS):
        free.put(bytearray(buffer_bytes))

    def open_records() -> None:
        left = size
        try:
            while left:
                buf = free.get()
                if buf is _STOP:
                    return
                n = stream.receive_into(memoryview(buf), min(buffer_bytes, left))
                if not n:  # no sender makes one: taken as the end, as a plain stream's
                    raise EOFError(f"an empty record {size - left} bytes into {size}")
                left -= n
                opened.put((buf, n))
            opened.put(None)
        except BaseException as e:  # noqa: BLE001 - raised by the writing thread
            opened.put(e)

    def stop() -> None:
        free.put(_STOP)
        unblock()

    with _running(open_records, "opener", stop=stop):
        while (item := opened.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            write(memoryview(buf)[:n], lambda b=buf: free.put(b))


def _read_at(fd: int, view: memoryview, at: int, end: int) -> int:
    """Fill ``view`` from ``fd`` at ``at`` (a regular file reads short only at its end)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], at + got)
        if not n:
            raise EOFError(f"the file ended at byte {at + got}, expected {end}")
        got += n
    return got


def _hash_range(checksum: Any, fd: int, start: int, stop: int, buf: memoryview) -> None:
    at = start
    while at < stop:
        at += (n := _read_at(fd, buf[: min(len(buf), stop - at)], at, stop))
        checksum.update(buf[:n])


@contextmanager
def _running(target: Callable[[], None], name: str, stop: Callable[[], None]) -> Iterator[None]:
    """``target`` on a thread for the block; if the block ends early, ``stop()`` wakes the
    thread, and either way it is joined before the block's outcome goes on."""
    thread = threading.Thread(target=target, name=f"sealed-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        if thread.is_alive():
            stop()
        thread.join()

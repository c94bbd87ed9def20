"""One file arriving at the worker's cache: appended to a partial file, hashed as it comes,
published under its sha256 only once every byte is there and the hash matches: the sha256
itself (on a thread of its own), or the xxh3-128 checksum the coordinator computed with it
(engine/worker/checksum.py; in the receiving thread; the file is then kept as that
coordinator's, engine/worker/files.py).

The partial file stays when a stream breaks, so the next attempt resumes where this one
stopped (the hasher first re-reads the bytes already held). It is deleted when the content
is refused (a wrong hash, a chunk out of place, too many bytes): nothing refused is kept.

Several worker processes of one Mac may share a cache folder (local workers do), and a
coordinator sends each of them the same file at once. The partial file is locked (flock) from
open to publish; a second process that finds it locked writes a private partial of its own
from byte 0 (the same bytes; whichever publishes last replaces the other's identical file),
or, asked to resume from held bytes it cannot take, says the file is busy.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.worker.checksum import ALGORITHM, new_checksum
from engine.worker.errors import InvalidRequest, OutOfOrder

_private = itertools.count()
HASH_QUEUE = 16  # buffers waiting for the hasher: bounds the memory a fast sender can fill
_READ_BLOCK = 4 * 1024 * 1024


class Superseded(Exception):
    """A newer transfer of the same file took over; this one stops and keeps what it wrote."""


class Hasher:
    """sha256 on its own thread. hashlib releases the GIL on large buffers, so hashing one
    buffer overlaps receiving and writing the next one: a second core does the hashing."""

    def __init__(self, prefix: Path | None = None, prefix_bytes: int = 0):
        self._h = hashlib.sha256()
        self._q: queue.Queue = queue.Queue(maxsize=HASH_QUEUE)
        self._error: BaseException | None = None
        self._prefix, self._prefix_bytes = prefix, prefix_bytes
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._prefix is not None and self._prefix_bytes:
                _hash_prefix(self._h, self._prefix, self._prefix_bytes)
        except BaseException as e:  # noqa: BLE001 - reported by digest()
            self._error = e
        while (item := self._q.get()) is not None:  # drain even after an error: never block
            data, release = item
            if self._error is None:
                try:
                    self._h.update(data)
                except BaseException as e:  # noqa: BLE001 - reported by digest()
                    self._error = e
            if release is not None:
                release()

    def update(self, data: bytes | memoryview, release: Callable[[], None] | None = None) -> None:
        """Hash ``data`` (which must not change until ``release`` is called) after the rest."""
        self._q.put((data, release))

    def digest(self) -> str:
        """Wait for every queued buffer; the hex digest (or the error the thread met)."""
        self.stop()
        if self._error is not None:
            raise self._error
        return self._h.hexdigest()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


class InlineHasher:
    """The checksum (engine/worker/checksum.py, ~30 GB/s a core) in the receiving thread, as
    :class:`Hasher`'s interface: handing each buffer to another thread costs more than hashing
    it (measured with py-spy: the queue's wake-ups and the GIL's hand-overs took a fifth of the
    receiving thread's time). The bytes a broken stream left behind are read back at the first
    update, in the receiving thread, never under the store's lock."""

    def __init__(self, prefix: Path | None = None, prefix_bytes: int = 0):
        self._h = new_checksum()
        self._error: BaseException | None = None
        self._prefix, self._prefix_bytes = prefix, prefix_bytes

    def update(self, data: bytes | memoryview, release: Callable[[], None] | None = None) -> None:
        try:
            if self._error is None:
                self._catch_up()
                self._h.update(data)
        except BaseException as e:  # noqa: BLE001 - reported by digest(), as Hasher does
            self._error = e
        finally:
            if release is not None:
                release()

    def _catch_up(self) -> None:
        if self._prefix is not None and self._prefix_bytes:
            held, self._prefix_bytes = self._prefix_bytes, 0
            _hash_prefix(self._h, self._prefix, held)

    def digest(self) -> str:
        if self._error is None:
            self._catch_up()
        if self._error is not None:
            raise self._error
        return self._h.hexdigest()

    def stop(self) -> None:
        pass


def _hash_prefix(h: Any, path: Path, nbytes: int) -> None:
    """The bytes a broken stream left behind: read back from disk before the new ones."""
    left = nbytes
    buf = bytearray(min(_READ_BLOCK, left))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while left:
            n = f.readinto(view[: min(len(buf), left)])
            if not n:
                raise OSError(f"{path}: shorter than the {nbytes} bytes held")
            h.update(view[:n])
            left -= n


class Incoming:
    """A file being received into ``partial``; made by :meth:`FileStore.begin`."""

    def __init__(
        self, sha256: str, name: str, partial: Path, offset: int, limit: int,
        on_close: Callable[[Incoming], None], publish: Callable[[Incoming], Path],
        checksum: str | None = None, caller: str = "", checksum_at_end: bool = False,
    ):  # fmt: skip
        """``checksum``: the xxh3-128 hex digest to check instead of the sha256 (which is then
        ``caller``'s word: the file is kept as theirs). ``checksum_at_end``: that digest comes
        after the bytes (a sealed stream's last record): set ``checksum`` before finish()."""
        self.sha256, self.name = sha256, name
        self.checksum, self.caller = checksum, caller
        self.checksum_at_end = checksum_at_end
        self.partial: Path | None = partial
        self.offset = offset  # bytes held before this transfer began
        self.received = 0  # bytes this transfer wrote
        self._limit = limit  # the most bytes the whole file may have
        self._on_close, self._publish = on_close, publish
        self._cancel_hooks: list[Callable[[], None]] = []
        self.cancelled = self._closed = False
        fd = _open_locked(partial)
        if fd is None:  # another process is receiving this file into the shared partial
            if offset:
                raise OutOfOrder(f"{name}: another process of this machine is receiving this "
                                 "file; send it from byte 0 or once that transfer ends")  # fmt: skip
            self.partial = partial = partial.with_name(
                f"{partial.stem}.{os.getpid()}-{next(_private)}.part"
            )
            fd = _open_locked(partial)
            assert fd is not None  # a name of this process's own
        try:
            # a resume from fewer bytes than held drops the rest. Only then: ext4 (auto_da_alloc)
            # writes a file truncated to 0 out to disk as it is closed, which cost a 256 MiB
            # file ~0.1 s of the transfer (a new partial is empty already)
            if os.fstat(fd).st_size != offset:
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self._hasher = (InlineHasher if checksum or checksum_at_end else Hasher)(partial, offset)

    @property
    def size(self) -> int:
        """Bytes of the file held so far."""
        return self.offset + self.received

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (e.g. shut the socket) when a newer transfer of this file takes over."""
        self._cancel_hooks.append(hook)
        if self.cancelled:
            hook()

    def cancel(self) -> None:
        self.cancelled = True
        for hook in self._cancel_hooks:
            try:
                hook()
            except OSError:
                pass  # the socket is already gone: that is the point

    def write(self, data: bytes | memoryview, release: Callable[[], None] | None = None) -> None:
        """Append ``data`` and queue it for hashing; ``release()`` once it is hashed."""
        if self.cancelled or self._fd is None:
            raise Superseded(f"{self.name}: a newer transfer of this file took over")
        if self.size + len(data) > self._limit:
            raise InvalidRequest(
                f"{self.name}: more than the {self._limit} bytes announced for this file"
            )
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self.received += len(view)
        self._hasher.update(data, release)

    def finish(self) -> tuple[str, int]:
        """Check the hash, publish the file under its sha256, return (sha256, size). A
        mismatch deletes the partial file and raises InvalidRequest naming both hashes."""
        try:
            actual = self._hasher.digest()
            expected, kind = (
                (self.checksum, ALGORITHM) if self.checksum else (self.sha256, "sha256")
            )
            if actual != expected:
                raise InvalidRequest(
                    f"{self.name}: {kind} mismatch (sent {expected}, received {actual})"
                )
            self._publish(self)  # still locked: no other process truncates it meanwhile
            self.partial = None  # renamed away: the path may already be another transfer's
        except BaseException:
            self.close(keep=False)
            raise
        self.close(keep=False)  # published: the partial has been renamed away
        return self.sha256, self.size

    def close(self, keep: bool) -> None:
        """End this transfer; ``keep`` the partial file for a resume, or delete it."""
        if self._closed:
            return
        self._closed = True
        self._close_fd()
        self._hasher.stop()
        if not keep and self.partial is not None:
            self.partial.unlink(missing_ok=True)
        self._on_close(self)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_locked(path: Path) -> int | None:
    """``path`` opened for writing under an exclusive flock, or None if another holds it.
    The folder is made again if another process removed it in the meantime (it removes the
    folder once empty)."""
    for attempt in range(5):
        try:
            make_folder(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            break
        except FileNotFoundError:  # removed between the two
            if attempt == 4:
                raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_folder(folder: Path) -> None:
    """``folder.mkdir(parents=True, exist_ok=True)`` that another process removing the same
    empty folder at the same moment cannot fail (pathlib raises FileExistsError when the
    folder it was told exists is gone by the time it checks)."""
    for attempt in range(5):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return
        except FileExistsError:
            if attempt == 4:
                raise

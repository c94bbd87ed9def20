"""Read, from /proc, how many bytes one local process has sent another that are still unread.

The coordinator-death test freezes a worker (SIGSTOP) and lets its peer start a step: the
frozen worker's kernel still accepts the peer's gradient part, but nobody reads it, so the
bytes wait in the receiving socket's queue. Seeing them proves the peer got past its compute
into the collective, where it now blocks; no log line or timing guess is needed.
"""

from __future__ import annotations

import os
from pathlib import Path

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _rows() -> list[tuple[int, int, int, int]]:
    """(local port, remote port, rx_queue, inode) of every TCP socket in this namespace."""
    rows = []
    for table in _TABLES:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, queues, inode = f[1], f[2], f[4], f[9]
            rx = int(queues.split(":")[1], 16)
            rows.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                         rx, int(inode)))  # fmt: skip
    return rows


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def unread_from(sender_pid: int, receiver_port: int) -> int:
    """Bytes that ``sender_pid`` sent to the server on ``receiver_port`` which the server's
    process has not read yet (receive queues of the server-side sockets)."""
    rows = _rows()
    mine = _socket_inodes(sender_pid)
    sender_ports = {lp for lp, rp, _, inode in rows if inode in mine and rp == receiver_port}
    return sum(rx for lp, rp, rx, _ in rows if lp == receiver_port and rp in sender_ports)

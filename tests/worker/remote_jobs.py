"""Set a tiny job up on a real worker through a WorkerClient, as a coordinator would, and find
the agent's job process; shared by the remote-agent tests and their coordinator processes."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from engine.rpc.worker_client import WorkerClient

_JOB_READY = re.compile(r"job process (\d+) ready")


def set_up_job(
    client: WorkerClient, out: Path, run_id: str = "run", peers: list[str] | None = None,
    steps: int = 3, rank: int = 0, mode: str = "", mlx_hostfile: str = "",
) -> str:  # fmt: skip
    """Ship the files and set up stories260K (``rank`` of ``peers``, else rank 0 of one
    worker; ``mode`` for another dist.mode); returns the job id the worker gave the client."""
    from engine.runtime.shipped_files import files_to_ship
    from engine.worker.checksum import file_digests
    from tests.runtime.helpers import tiny_job

    peers = peers or [client.address]
    # a long step deadline: a test that blocks a step on a silent peer decides when it ends
    over = {"dist.step_timeout_s": 600.0, "dist.workers": len(peers)}
    job = tiny_job(out, steps, **over, **({"dist.mode": mode} if mode else {}))
    hashes = {}
    for role, path in files_to_ship(job, remote=True).items():
        # with the checksum, as Cluster ships: a network worker keeps the file as this
        # caller's, and SetupJob finds it only for that caller
        hashes[role], checksum = file_digests(path)
        name = role.split("/", 1)[1] if role.startswith("model/") else path.name
        client.put_file(path, hashes[role], name=name, checksum=checksum)
    client.setup_job(job.to_toml(), rank, len(peers), peers, run_id, hashes, "group-token",
                     mlx_hostfile)  # fmt: skip
    return client.job_id


def silent_peer() -> tuple[socket.socket, str]:
    """A listening socket that never answers: rank 1 of a group whose rank 0 then waits in
    its first collective (a Step that stays in flight until something ends it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, f"127.0.0.1:{s.getsockname()[1]}"


def wait_reached(sock: socket.socket, timeout: float) -> socket.socket:
    """The connection rank 0 opens to the silent peer ``sock`` once its Step is in the agent
    and in its first collective (the job connects to its peers lazily): proof, not a guess,
    that the Step is in flight. Keep it open; AssertionError past ``timeout``."""
    sock.settimeout(timeout)
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        raise AssertionError(f"rank 0 never reached its silent peer within {timeout} s") from None
    return conn


def job_pids(log_path: Path) -> list[int]:
    """The agent's job processes, in the order its log announced them."""
    return [int(p) for p in _JOB_READY.findall(log_path.read_text(errors="replace"))]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout: float) -> float:
    """Seconds until ``pid`` is gone; AssertionError past ``timeout``."""
    t0 = time.monotonic()
    while alive(pid):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"process {pid} still runs after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def kill_hard(pid: int) -> None:
    os.kill(pid, 9)

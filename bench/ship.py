"""Model shipping throughput: Orchard's file stream against raw TCP on the same link.

The coordinator ships model files to a worker with ``WorkerClient.put_file`` (gRPC, 1 MiB
chunks; the worker hashes and writes them into its cache). The baseline is raw TCP on the
same link: ``socket.sendfile`` to a plain receiver that writes the bytes to disk on the same
filesystem. Both receivers are separate processes; each case keeps the best of ``--rounds``
interleaved rounds, so a noisy neighbour hits both alike. Links:

- ``loopback``: 127.0.0.1
- ``veth``: a veth pair into a network namespace (needs root; skipped otherwise)
- ``veth-1gbit``: the same, shaped to 1 Gbit/s with tbf (a wired LAN between Macs)

Each case prints ``link=<l> mb=<n> ship_mb_s=<x> tcp_mb_s=<y> ratio=<x/y>``; the last line
is the worst ratio, ``ship_vs_tcp=<x>`` (target >= 0.7).

Run: python bench/ship.py [--mb 256] [--rounds 3] [--links loopback veth veth-1gbit]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.rpc.auth import new_token  # noqa: E402
from engine.rpc.worker_client import WorkerClient  # noqa: E402
from engine.worker.agent import PARENT_PID_ENV, PORT_LINE  # noqa: E402

MIB = 1024 * 1024
RECEIVER = """
import socket, sys, time
path, host = sys.argv[1], sys.argv[2]
srv = socket.create_server((host, 0))
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    with conn, open(path, "wb") as out:
        n = 0
        while chunk := conn.recv(1 << 20):
            out.write(chunk)
            n += len(chunk)
        conn.sendall(str(n).encode())
"""


class Link:
    """Where the receivers run: a command prefix and the address they bind."""

    def __init__(self, name: str, prefix: list[str], host: str, cleanup: list[list[str]]):
        self.name, self.prefix, self.host, self.cleanup = name, prefix, host, cleanup

    def close(self) -> None:
        for cmd in self.cleanup:
            subprocess.run(cmd, capture_output=True)


def make_link(name: str) -> Link | None:
    if name == "loopback":
        return Link(name, [], "127.0.0.1", [])
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print(f"# {name}: skipped (needs root and iproute2)")
        return None
    tag = secrets.token_hex(3)
    ns, a, b = f"orchship{tag}", f"osa{tag}", f"osb{tag}"
    net = 10 + int(tag[:2], 16) % 200
    cleanup = [["ip", "netns", "del", ns], ["ip", "link", "del", a]]
    link = Link(name, ["ip", "netns", "exec", ns], f"10.{net}.77.2", cleanup)
    try:
        for cmd in (
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
            ["ip", "link", "set", b, "netns", ns],
            ["ip", "addr", "add", f"10.{net}.77.1/24", "dev", a],
            ["ip", "link", "set", a, "up"],
            ["ip", "netns", "exec", ns, "ip", "addr", "add", f"10.{net}.77.2/24", "dev", b],
            ["ip", "netns", "exec", ns, "ip", "link", "set", b, "up"],
            ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        if name == "veth-1gbit":  # shape both directions like a gigabit LAN
            tbf = ["tbf", "rate", "1gbit", "burst", "256kb", "latency", "50ms"]
            subprocess.run(["tc", "qdisc", "add", "dev", a, "root", *tbf], check=True, capture_output=True)  # fmt: skip
            subprocess.run([*link.prefix, "tc", "qdisc", "add", "dev", b, "root", *tbf],
                           check=True, capture_output=True)  # fmt: skip
    except subprocess.CalledProcessError as e:
        link.close()
        print(f"# {name}: skipped ({' '.join(e.cmd)}: {e.stderr.decode().strip()})")
        return None
    return link


def start_worker(link: Link, data_dir: Path, token: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "PYTHONPATH": str(ROOT)}
    cmd = [*link.prefix, sys.executable, "-m", "engine.worker", "--local", "--host", link.host,
           "--data-dir", str(data_dir), "--log-level", "WARNING"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(token.encode() + b"\n")
    proc.stdin.flush()
    line = proc.stdout.readline().decode().strip()
    if not line.startswith(PORT_LINE):
        proc.kill()
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc, int(line[len(PORT_LINE) :])


def start_receiver(link: Link, out: Path) -> tuple[subprocess.Popen, int]:
    cmd = [*link.prefix, sys.executable, "-c", RECEIVER, str(out), link.host]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def ship_once(client: WorkerClient, path: Path, size: int) -> float:
    """One PutFile of fresh content (its hash is new to the worker, as a new model's is)."""
    with open(path, "r+b") as f:  # a new first block: a new file to the worker's cache
        f.write(secrets.token_bytes(4096))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    t0 = time.perf_counter()
    stored = client.put_file(path, digest, name="model.safetensors")
    dt = time.perf_counter() - t0
    assert stored == size, (stored, size)
    return dt


def tcp_once(host: str, port: int, path: Path, size: int) -> float:
    t0 = time.perf_counter()
    with socket.create_connection((host, port)) as s, open(path, "rb") as f:
        s.sendfile(f)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
    dt = time.perf_counter() - t0
    assert got == size, (got, size)
    return dt


def bench_link(name: str, mb: int, rounds: int, work: Path) -> float | None:
    link = make_link(name)
    if link is None:
        return None
    token = new_token()
    procs: list[subprocess.Popen] = []
    try:
        data = work / f"{name}.bin"
        size = mb * MIB
        with open(data, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(MIB))
        worker, wport = start_worker(link, work / f"{name}-worker", token)
        recv, rport = start_receiver(link, work / f"{name}-tcp.bin")
        procs += [worker, recv]
        client = WorkerClient(f"{link.host}:{wport}", token, timeout_s=120.0)
        client.wait_ready(timeout_s=60.0)
        ship = tcp = float("inf")
        for _ in range(rounds):  # interleaved, best of each
            ship = min(ship, ship_once(client, data, size))
            tcp = min(tcp, tcp_once(link.host, rport, data, size))
            shutil.rmtree(work / f"{name}-worker" / "files", ignore_errors=True)
            (work / f"{name}-worker" / "files").mkdir(parents=True, exist_ok=True)
        client.close()
        ship_mb_s, tcp_mb_s = size / MIB / ship, size / MIB / tcp
        ratio = ship_mb_s / tcp_mb_s
        print(f"link={name} mb={mb} ship_mb_s={ship_mb_s:.0f} tcp_mb_s={tcp_mb_s:.0f} "
              f"ratio={ratio:.2f}", flush=True)  # fmt: skip
        return ratio
    finally:
        for p in procs:
            p.kill()
            p.wait()
        link.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256, help="file size in MiB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--links", nargs="+", default=["loopback", "veth", "veth-1gbit"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchard-ship-") as tmp:
        ratios = [r for name in args.links if (r := bench_link(name, args.mb, args.rounds, Path(tmp))) is not None]  # fmt: skip
    if not ratios:
        print("ship_vs_tcp=nan")
        return 1
    print(f"ship_vs_tcp={min(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model shipping throughput: Orchard's file transfer against raw TCP on the same link.

The coordinator ships model files to a worker with ``WorkerClient.put_file``: a large file
goes over the worker's bulk socket (engine/rpc/bulk.py: ``sendfile`` to a local worker, a
sealed stream, AES-256-GCM, to a paired one; the worker writes and checks the xxh3-128 the
coordinator computed with the sha256, engine/worker/checksum.py), a small one over the gRPC
PutFile stream. The ``ship`` time includes the coordinator's checksum, as for a Hugging
Face blob, named by its sha256 (a folder's file gets it free with its sha256, which, like the
digest here, is computed once before): a pass over the file before the bytes for a local
worker; a sealed stream computes it as it seals the bytes and sends it at its end. Each round also sends the file over
PutFile alone (``grpc``: what every file took before the bulk socket, and still the
fallback), and with ``--sha256`` over the bulk socket without the checksum (``sha256``: the
worker hashes sha256 as the bytes come, as before the checksum). The baseline is raw TCP on
the same link: ``socket.sendfile`` to a plain receiver that writes the bytes to a new file on
the same filesystem, unencrypted on every link. Receivers are separate processes. Each
transfer's file is deleted right after it (the worker's cache is emptied), so none pays for
another's dirty pages; rounds are interleaved in a rotating order (a noisy neighbour hits
every method alike) and each method keeps its best.

Links (each prints what it models):
- ``loopback``: 127.0.0.1, a local worker (plain TCP, the run token)
- ``veth``: a veth pair into a network namespace (needs root; skipped otherwise)
- ``veth-1gbit``, ``veth-10gbit``: the same, shaped with tbf (a gigabit LAN; 10 GbE or a
  Thunderbolt bridge between Macs)
- ``veth-tls``, ``veth-10gbit-tls``: a paired network worker (`orchard worker`) across the
  veth: gRPC over TLS pinned to its certificate, the bulk socket sealed; the baseline stays
  plain TCP, so the ratio includes what encryption costs
- ``loopback-tls``, ``veth-1gbit-tls``: the same on the other links (not run by default)

Each case prints ``link=<l> mb=<n> ship_mb_s=<x> grpc_mb_s=<g> tcp_mb_s=<y> ratio=<x/y>``
(best of the rounds each), then the ratio of each round and their median (how noisy it
was) and the CPU seconds per GiB each method cost the receiving process and the sending one
(this process, kernel time included), ``rx/tx``: these hardly move with the machine's load,
and show what bounds a CPU-bound link (on a 2-core machine sender and receiver share the
cores; between two Macs each has its own). The last line is the worst ratio,
``ship_vs_tcp=<x>`` (target >= 0.7).

Run: python bench/ship.py [--mb 256] [--rounds 3] [--links ...] [--sha256] [--no-grpc]
[--split-cpus] (the sender on one core, the receivers on another: two machines' CPUs)

Old against new: ``--against REF`` (a git ref of this repository, e.g. ``main``) runs this
bench from REF's tree and from this one in turn, ``--inner`` rounds each (3; each run's ratio
is of its best), ``--rounds`` times (alternating which goes first), and prints each link's
ratios to raw TCP, old and new side by side, and the ship's CPU per GiB; the last line is
the worst link's median, ``ship_vs_tcp=<new> (REF: <old>)``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.rpc.auth import new_token  # noqa: E402
from engine.rpc.worker_client import WorkerClient  # noqa: E402
from engine.worker.agent import PARENT_PID_ENV, PORT_LINE  # noqa: E402
from engine.worker.checksum import file_checksum  # noqa: E402

MIB = 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")
RECEIVER = """
import socket, sys
path, host = sys.argv[1], sys.argv[2]
srv = socket.create_server((host, 0))
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    with conn, open(path, "wb") as out:  # a new file: the bench deletes it after each transfer
        n = 0
        while chunk := conn.recv(1 << 20):
            out.write(chunk)
            n += len(chunk)
        conn.sendall(str(n).encode())
"""
# tbf rate and burst (a burst must hold what the rate sends in a timer tick or two)
SHAPED = {"veth-1gbit": ("1gbit", "256kb"), "veth-10gbit": ("10gbit", "4mb")}
MODELS = {
    "loopback": "a local worker on the coordinator's Mac (127.0.0.1)",
    "veth": "an unshaped veth pair into a namespace: as fast as this machine's CPUs let it be",
    "veth-1gbit": "a veth shaped to 1 Gbit/s with tbf: a wired gigabit LAN between Macs",
    "veth-10gbit": "a veth shaped to 10 Gbit/s with tbf: 10 GbE, or a Thunderbolt bridge "
    "between Macs (this machine's CPUs may not fill it)",
}
LINKS = ["loopback", "veth", "veth-1gbit", "veth-10gbit", "veth-tls", "veth-10gbit-tls"]
_WORKER_LINE = re.compile(r"^Orchard worker \S+ on port (\d+) ")
_CODE_LINE = re.compile(r"^Pairing code: ([0-9A-Z]{4}-[0-9A-Z]{4})")


class Link:
    """Where the receivers run: a command prefix and the address they bind."""

    def __init__(self, name: str, prefix: list[str], host: str, cleanup: list[list[str]]):
        self.name, self.prefix, self.host, self.cleanup = name, prefix, host, cleanup

    def close(self) -> None:
        for cmd in self.cleanup:
            subprocess.run(cmd, capture_output=True)


def make_link(name: str) -> Link | None:
    base = name.removesuffix("-tls")
    if base == "loopback":
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
        if base in SHAPED:  # shape both directions like the link it models
            tbf = ["tbf", "rate", SHAPED[base][0], "burst", SHAPED[base][1], "latency", "50ms"]
            subprocess.run(["tc", "qdisc", "add", "dev", a, "root", *tbf], check=True, capture_output=True)  # fmt: skip
            subprocess.run([*link.prefix, "tc", "qdisc", "add", "dev", b, "root", *tbf],
                           check=True, capture_output=True)  # fmt: skip
    except subprocess.CalledProcessError as e:
        link.close()
        print(f"# {name}: skipped ({' '.join(e.cmd)}: {e.stderr.decode().strip()})")
        return None
    return link


def start_local_worker(link: Link, data_dir: Path, token: str) -> tuple[subprocess.Popen, WorkerClient]:  # fmt: skip
    """A worker as a local engine starts it: plain TCP, the run token."""
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
    return proc, WorkerClient(f"{link.host}:{line[len(PORT_LINE) :]}", token, timeout_s=120.0)


def start_paired_worker(link: Link, work: Path) -> tuple[subprocess.Popen, WorkerClient]:
    """A network worker (`orchard worker`, TLS), paired with a coordinator home made here."""
    from engine.cli.pair_cmd import pair_main
    from engine.rpc.paired_client import connect_paired
    from engine.trust import open_trust_home

    env = {**os.environ, "ORCHARD_HOME": str(work / "agent-home"), "PYTHONPATH": str(ROOT)}
    env.pop("ORCHARD_WORKER_TOKEN", None)
    cmd = [*link.prefix, sys.executable, "-m", "engine.worker", "--host", link.host,
           "--port", "0", "--no-advertise", "--no-warm-spare", "--log-level", "WARNING",
           "--data-dir", str(work / "worker")]  # fmt: skip
    (work / "agent-home").mkdir(parents=True, exist_ok=True)
    log = open(work / "agent-home" / "stderr.log", "w")  # noqa: SIM115 - the agent holds it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=log,
                            env=env, text=True)  # fmt: skip
    assert proc.stdout is not None
    port = code = None
    deadline = time.monotonic() + 120
    while (port is None or code is None) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        port = port or ((m := _WORKER_LINE.match(line)) and m.group(1))
        code = code or ((m := _CODE_LINE.match(line)) and m.group(1))
    if port is None or code is None:
        proc.kill()
        tail = (work / "agent-home" / "stderr.log").read_text()[-2000:]
        raise RuntimeError(f"network worker did not show its port and pairing code: {tail}")
    os.environ["ORCHARD_HOME"] = str(work / "coord-home")
    address = f"{link.host}:{port}"
    with contextlib.redirect_stdout(io.StringIO()):  # "paired with ...": not a result line
        paired = pair_main(address, code)
    if paired != 0:
        proc.kill()
        raise RuntimeError(f"could not pair with {address}")
    client, _ = connect_paired(address, open_trust_home(), timeout_s=120.0)
    return proc, client


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (the threads it starts later inherit them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of a process, or of this one (all threads) when None."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measured(rx_pid: int, send: Callable[[], None]) -> tuple[float, float, float]:
    """(seconds, receiver CPU s, sender CPU s) of one transfer."""
    rx0, tx0, t0 = cpu_s(rx_pid), cpu_s(None), time.perf_counter()
    send()
    dt = time.perf_counter() - t0
    return dt, cpu_s(rx_pid) - rx0, cpu_s(None) - tx0


def settle(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until a new worker is idle: it imports the training stack in the background at
    start, which would slow whichever transfer came first."""
    deadline = time.monotonic() + timeout_s
    last = cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_s(pid)
        if now - last < 0.05:
            return
        last = now


def fresh(path: Path) -> str:
    """A new first block: a file new to the worker's cache, as a new model's is."""
    with open(path, "r+b") as f:
        f.write(secrets.token_bytes(4096))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tcp_send(host: str, port: int, path: Path, size: int) -> None:
    with socket.create_connection((host, port)) as s, open(path, "rb") as f:
        s.sendfile(f)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
    assert got == size, (got, size)


def bench_link(name: str, mb: int, rounds: int, work: Path, grpc: bool, sha256: bool,
               split: bool) -> float | None:  # fmt: skip
    link = make_link(name)
    if link is None:
        return None
    cpus = os.sched_getaffinity(0)
    base = name.removesuffix("-tls")
    tls = " (a paired worker: gRPC and the bulk socket over TLS; raw TCP stays plain)"
    print(f"# {name}: {MODELS[base]}{tls if name.endswith('-tls') else ''}", flush=True)
    procs: list[subprocess.Popen] = []
    clients: list[WorkerClient] = []
    try:
        data = work / f"{name}.bin"
        size = mb * MIB
        with open(data, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(MIB))
        os.sync()  # its dirty pages would throttle whichever transfer comes first
        if name.endswith("-tls"):
            worker, client = start_paired_worker(link, work / name)
            cache = work / name / "worker" / "files"
        else:
            worker, client = start_local_worker(link, work / f"{name}-worker", new_token())
            cache = work / f"{name}-worker" / "files"
        procs.append(worker)
        clients.append(client)
        client.wait_ready(timeout_s=60.0)
        settle(worker.pid)
        recv = subprocess.Popen([*link.prefix, sys.executable, "-c", RECEIVER,
                                 str(work / f"{name}-tcp.bin"), link.host], stdout=subprocess.PIPE)  # fmt: skip
        procs.append(recv)
        assert recv.stdout is not None
        rport = int(recv.stdout.readline())
        if split:  # the sender on one core, the receivers on another: two machines' CPUs
            pin(os.getpid(), {0})
            for pid in (worker.pid, recv.pid):
                pin(pid, {os.cpu_count() - 1})  # type: ignore[operator]

        def ship(use_bulk: bool, fast: bool = True) -> Callable[[], None]:
            def send() -> None:
                client.use_bulk = use_bulk
                # the coordinator's checksum, as a Hugging Face blob's comes (a folder's file
                # gets it free with the sha256, which, like `digest`, is remembered): a pass
                # over the file before the bytes, timed, for a worker that needs it first; a
                # sealed stream computes it as it goes and sends it at its end
                checksum = (lambda: file_checksum(data)) if use_bulk and fast else ""
                assert client.put_file(data, digest, name="model.safetensors",
                                       checksum=checksum) == size  # fmt: skip

            return send

        methods = {
            "ship": (worker.pid, ship(True)),
            "tcp": (recv.pid, lambda: tcp_send(link.host, rport, data, size)),
        }
        if grpc:
            methods["grpc"] = (worker.pid, ship(False))
        if sha256:
            methods["sha256"] = (worker.pid, ship(True, fast=False))
        runs: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
        order = list(methods)
        for r in range(rounds):  # interleaved, each round in another order, best of each
            for method in order[r % len(order) :] + order[: r % len(order)]:
                pid, send = methods[method]
                digest = fresh(data)
                runs[method].append(measured(pid, send))
                # what arrived goes at once, so no transfer pays for another's dirty pages
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir(parents=True, exist_ok=True)
                (work / f"{name}-tcp.bin").unlink(missing_ok=True)
        gib = size / 1024**3
        best = {m: size / MIB / min(r[0] for r in rs) for m, rs in runs.items()}
        ratio = best["ship"] / best["tcp"]
        paired = [t / s for (s, *_), (t, *_) in zip(runs["ship"], runs["tcp"], strict=True)]
        per_round = " ".join(f"{r:.2f}" for r in paired)
        cpu = " ".join(
            f"{m}={min(r[1] for r in rs) / gib:.2f}/{min(r[2] for r in rs) / gib:.2f}"
            for m, rs in runs.items()
        )
        grpc_part = "".join(f" {m}_mb_s={best[m]:.0f}" for m in ("grpc", "sha256") if m in best)
        print(f"link={name} mb={mb} ship_mb_s={best['ship']:.0f}{grpc_part} "
              f"tcp_mb_s={best['tcp']:.0f} ratio={ratio:.2f}", flush=True)  # fmt: skip
        print(f"#   rounds ship/tcp: {per_round} (median {statistics.median(paired):.2f}); "
              f"cpu s/GiB rx/tx: {cpu}", flush=True)  # fmt: skip
        return ratio
    finally:
        pin(os.getpid(), cpus)
        for c in clients:
            c.close()
        for p in procs:
            p.kill()
            p.wait()
        link.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256, help="file size in MiB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--links", nargs="+", default=LINKS, choices=[*MODELS, *(f"{m}-tls" for m in MODELS)])  # fmt: skip
    p.add_argument("--no-grpc", action="store_true", help="skip the PutFile-only transfers")
    p.add_argument("--sha256", action="store_true",
                   help="also the bulk socket without the checksum (the worker hashes sha256)")  # fmt: skip
    p.add_argument("--split-cpus", action="store_true",
                   help="the sender on the first core, the receivers on the last (Linux): as "
                   "two machines, each with a core of its own, rather than one sharing them")  # fmt: skip
    p.add_argument("--against", metavar="REF",
                   help="run REF's tree of this bench and this one in turn, ratios side by side")  # fmt: skip
    p.add_argument("--inner", type=int, default=3,
                   help="with --against: the rounds of each run (its ratio is their best)")  # fmt: skip
    args = p.parse_args()
    if args.against:
        return against(args)
    if args.split_cpus:
        print("# split cpus: the sender on core 0, the receivers on core "
              f"{os.cpu_count() - 1} (each side has one; other load shares them)")  # type: ignore[operator]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="orchard-ship-") as tmp:
        ratios = [r for name in args.links
                  if (r := bench_link(name, args.mb, args.rounds, Path(tmp), not args.no_grpc, args.sha256, args.split_cpus)) is not None]  # fmt: skip
    if not ratios:
        print("ship_vs_tcp=nan")
        return 1
    print(f"ship_vs_tcp={min(ratios):.2f}")
    return 0


def against(args: argparse.Namespace) -> int:
    """This bench from ``args.against``'s tree and from this one, a round each in turn."""
    passed = ["--mb", str(args.mb), "--rounds", str(args.inner), "--links", *args.links]
    passed += [f for f, on in (("--no-grpc", args.no_grpc), ("--sha256", args.sha256),
                               ("--split-cpus", args.split_cpus)) if on]  # fmt: skip
    ratios: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    cpu: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}  # ship's rx/tx s/GiB
    with tempfile.TemporaryDirectory(prefix="orchard-ship-against-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {"old": Path(tmp), "new": ROOT}
        print(f"# old: {args.against} ({tmp}); new: {ROOT}", flush=True)
        for r in range(args.rounds):
            for which in ["old", "new"] if r % 2 == 0 else ["new", "old"]:
                out = subprocess.run([sys.executable, str(trees[which] / "bench" / "ship.py"), *passed],
                                     capture_output=True, text=True, cwd=trees[which])  # fmt: skip
                for m in re.finditer(r"^link=(\S+) .* ratio=([\d.]+)$", out.stdout, re.M):
                    ratios[which].setdefault(m.group(1), []).append(float(m.group(2)))
                for m in re.finditer(r"cpu s/GiB rx/tx: ship=([\d.]+)/([\d.]+)", out.stdout):
                    cpu[which].append((float(m.group(1)), float(m.group(2))))
                if out.returncode != 0:
                    print(f"# {which} round {r + 1} failed: {out.stderr.strip()[-500:]}")
    worst: dict[str, float] = {}
    for link in args.links:
        cells = []
        for which in ("old", "new"):
            rs = ratios[which].get(link, [])
            if rs:
                med = statistics.median(rs)
                worst[which] = min(worst.get(which, med), med)
                cells.append(f"{which}={' '.join(f'{x:.2f}' for x in rs)} (median {med:.2f})")
        print(f"link={link} " + " ".join(cells), flush=True)
    for which in ("old", "new"):
        if cpu[which]:
            rx, tx = (statistics.median(c[i] for c in cpu[which]) for i in (0, 1))
            print(f"# {which}: ship's cpu s/GiB rx/tx, median over links and rounds: {rx:.2f}/{tx:.2f}")  # fmt: skip
    if "new" not in worst:
        print("ship_vs_tcp=nan")
        return 1
    print(f"ship_vs_tcp={worst['new']:.2f} ({args.against}: {worst.get('old', float('nan')):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

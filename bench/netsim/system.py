"""Thin wrappers over ip, tc, iptables-legacy, cgroup v1 and setns, with errors that name the
command. Every object the harness makes has a name starting with PREFIX, so ``leftovers()``
finds anything a crashed run left behind and ``sweep()`` removes it."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "onsim"  # namespaces, links and cgroups made by the harness
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
CLONE_NEWNET = 0x40000000


class HarnessError(RuntimeError):
    """The harness cannot build or shape the network (what failed, and how to fix it)."""


def sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise HarnessError(f"`{' '.join(full)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def require() -> None:
    """Refuse early, naming what is missing, rather than half-building a network."""
    if os.geteuid() != 0:
        raise HarnessError("the link harness needs root (network namespaces, tc, iptables)")
    for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2"), ("iptables-legacy", "iptables"),
                      ("gcc", "gcc")):  # fmt: skip
        if shutil.which(tool) is None:
            raise HarnessError(
                f"`{tool}` is missing: apt-get install {pkg} (scripts/setup.sh --dev)"
            )
    if not Path("/usr/include/libnetfilter_queue/libnetfilter_queue.h").is_file():
        raise HarnessError("libnetfilter_queue headers are missing: apt-get install "
                           "libnetfilter-queue-dev (scripts/setup.sh --dev)")  # fmt: skip
    if not (CGROUP_CPU / "cpu.cfs_quota_us").is_file():
        raise HarnessError(f"no cgroup v1 cpu controller at {CGROUP_CPU}")


def nfdelay_binary() -> Path:
    """bench/netsim/nfdelay.c compiled once per version of its source (build/ is ignored)."""
    src = HERE / "nfdelay.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = BUILD / f"nfdelay-{digest}"
    if not out.is_file():
        BUILD.mkdir(exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        done = subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(tmp), str(src), "-lnetfilter_queue", "-lnfnetlink", "-lm"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"could not build {src.name}: {done.stderr.strip()[-800:]}")
        os.replace(tmp, out)
    return out


def enter_netns(name: str) -> None:
    """Move the calling process (before it opens any socket) into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_names() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _our_processes() -> list[int]:
    """nfdelay processes started from this checkout's build folder."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                exe = os.readlink(p / "exe")
            except OSError:
                continue
            if exe.startswith(str(BUILD / "nfdelay-")):
                pids.append(int(p.name))
    return pids


def leftovers() -> list[str]:
    """Everything of the harness still present: namespaces, root links, cgroups, processes."""
    found = [f"netns {n}" for n in netns_names() if n.startswith(PREFIX)]
    links = sh("ip", "-o", "link", "show", check=False).stdout
    found += [f"link {ln.split(':')[1].strip().split('@')[0]}" for ln in links.splitlines()
              if ln.split(":")[1].strip().startswith(PREFIX)]  # fmt: skip
    if CGROUP_CPU.is_dir():
        found += [f"cgroup {p}" for p in CGROUP_CPU.iterdir() if p.name.startswith(PREFIX)]
    found += [f"process {pid} (nfdelay)" for pid in _our_processes()]
    return found


def sweep() -> list[str]:
    """Remove everything leftovers() lists (a run killed with -9 cannot clean up itself)."""
    found = leftovers()
    for pid in _our_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for n in netns_names():
        if n.startswith(PREFIX):
            sh("ip", "netns", "del", n, check=False)
    if CGROUP_CPU.is_dir():
        for p in CGROUP_CPU.iterdir():
            if p.name.startswith(PREFIX):
                remove_cgroup(p)
    return found


def remove_cgroup(path: Path) -> None:
    """Move any task back to the root cgroup, then remove the folder."""
    try:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (CGROUP_CPU / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # the task exited meanwhile
        path.rmdir()
    except FileNotFoundError:
        pass

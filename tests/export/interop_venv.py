"""A separate virtual environment with torch + peft + transformers for the PEFT interop tests.

torch must stay out of the main environment: transformers (which mlx-lm imports) imports
torch whenever it is installed, which costs every worker process seconds of CPU. So the
torch side runs in ``.venv-interop/`` at the repo root, made once and reused while its
stamp matches. torch is installed ALONE and pinned first: unpinned on Linux, pip would pull
a multi-GB CUDA build. A dry run refuses any plan that pulls CUDA packages. The rest comes
in a second pip call constrained to the torch just installed, and is checked afterwards.

Run ``python -m tests.export.interop_venv`` (or scripts/interop_venv.sh) to make it ahead.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# ORCHARD_INTEROP_VENV moves it (e.g. to a folder a CI cache keeps).
VENV = Path(os.environ.get("ORCHARD_INTEROP_VENV") or REPO / ".venv-interop")
TORCH = "torch==2.13.0"
# Extra index for the torch install only (e.g. PyTorch's CPU wheel index on a Linux machine with no local wheel).
TORCH_INDEX_ENV = "ORCHARD_TORCH_INDEX_URL"
STAMP = "orchard-interop.json"
BUILD_LOG = "orchard-build.log"
LOCK_WAIT = 1800.0  # another session may be building it right now
PIP_TIMEOUT = 1200.0
CHECK_TIMEOUT = 180.0
_CUDA_PREFIXES = ("nvidia-", "triton", "cuda-")
_NETWORK_SIGNS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ProxyError",
    "connection broken by",
    "Could not fetch URL",
)


class InteropError(RuntimeError):
    """The interop environment could not be made; the message says which step and why."""


class IndexUnreachable(InteropError):
    """pip could not reach the package index (offline): a reason to skip, except in CI."""


def requirements() -> list[str]:
    """What goes in after torch. transformers matches the main environment's, so both sides
    read configs (and write tiny test models) the same way."""
    try:
        transformers = f"transformers=={metadata.version('transformers')}"
    except metadata.PackageNotFoundError:
        transformers = "transformers"
    return ["peft>=0.17", transformers, "safetensors", "numpy"]


def wanted() -> dict[str, object]:
    """Everything that, when changed, means the environment must be made again."""
    return {
        "schema": 1,
        "python": platform.python_version(),
        "base_python": str(Path(sys._base_executable).resolve()),
        "torch": TORCH,
        "torch_index": os.environ.get(TORCH_INDEX_ENV, ""),
        "packages": requirements(),
    }


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_interop_venv(venv: Path = VENV) -> Path:
    """The interop environment's python, made (under a file lock) when missing or stale."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _locked(venv.parent / f"{venv.name}.lock"):
        want = wanted()
        if _stamp(venv) == want and venv_python(venv).is_file():
            return venv_python(venv)
        if venv.exists():
            log.info("interop venv %s is stale or incomplete: making it again", venv)
            shutil.rmtree(venv)
        started = time.monotonic()
        _build(venv)
        stamp = {"wanted": want, "torch_installed": _torch_version(venv)}
        (venv / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        log.info("interop venv %s made in %.0f s", venv, time.monotonic() - started)
        return venv_python(venv)


def _stamp(venv: Path) -> dict[str, object] | None:
    try:
        return json.loads((venv / STAMP).read_text(encoding="utf-8")).get("wanted")
    except (OSError, ValueError, AttributeError):
        return None


class _locked:
    """An exclusive flock with a deadline, so parallel pytest sessions build it once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.handle = open(self.path, "w")  # noqa: SIM115 - closed in __exit__
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.handle.close()
                    raise InteropError(f"{self.path}: locked after {LOCK_WAIT:.0f} s") from None
                time.sleep(1.0)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _build(venv: Path) -> None:
    _run([sys.executable, "-m", "venv", str(venv)], "create the venv", venv, 300.0)
    python = str(venv_python(venv))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    torch_index = os.environ.get(TORCH_INDEX_ENV)
    extra = ["--extra-index-url", torch_index] if torch_index else []
    report = venv / "torch-plan.json"
    _run([*pip, "--dry-run", "--report", str(report), *extra, TORCH], "plan torch", venv)
    _refuse_cuda(report)
    _run([*pip, *extra, TORCH], f"install {TORCH}", venv)
    torch_version = _torch_version(venv)
    constraints = venv / "keep-torch.txt"
    constraints.write_text(f"torch=={torch_version}\n", encoding="utf-8")
    deps = requirements()
    _run([*pip, "-c", str(constraints), *deps], f"install {' '.join(deps)}", venv)
    if _torch_version(venv) != torch_version:
        raise InteropError(f"{venv}: installing {deps} replaced torch {torch_version}")
    _run([python, "-c", "import torch, peft, transformers"], "import check", venv, CHECK_TIMEOUT)


def _refuse_cuda(report: Path) -> None:
    plan = json.loads(report.read_text(encoding="utf-8"))
    names = [item["metadata"]["name"] for item in plan.get("install", [])]
    cuda = [n for n in names if n.lower().startswith(_CUDA_PREFIXES)]
    if cuda:
        raise InteropError(
            f"pip would install a CUDA build of torch (with {', '.join(cuda[:3])}, ...). "
            f"Give it a CPU wheel: set {TORCH_INDEX_ENV} to PyTorch's CPU wheel index "
            "or put the wheel in a PIP_FIND_LINKS folder"
        )


def _torch_version(venv: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    out = _run([str(venv_python(venv)), "-c", code], "read torch's version", venv, CHECK_TIMEOUT)
    return out.strip().splitlines()[-1]


def _run(cmd: list[str], step: str, venv: Path, timeout: float = PIP_TIMEOUT) -> str:
    """Run one step with a deadline; its output goes to the build log and into any error."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log.info("interop venv: %s", step)
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise InteropError(f"{venv}: {step}: no result within {timeout:.0f} s") from None
    output = done.stdout + done.stderr
    if venv.is_dir():
        with open(venv / BUILD_LOG, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(cmd)}\n{output}\n")
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        kind = IndexUnreachable if any(s in output for s in _NETWORK_SIGNS) else InteropError
        reason = "package index unreachable" if kind is IndexUnreachable else "failed"
        raise kind(f"{venv}: {step}: {reason} (exit {done.returncode}):\n{tail}")
    return done.stdout


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        python = ensure_interop_venv()
    except InteropError as e:
        log.error("%s", e)
        return 1
    log.info("%s", python)
    return 0


if __name__ == "__main__":
    sys.exit(main())

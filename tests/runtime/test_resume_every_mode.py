"""Stop, then resume, in every sync mode: the resumed run follows the uninterrupted curve.

Per mode, on 2 workers: one uninterrupted run of STEPS steps (the reference) and one run
stopped after step STOP_AT through the real Stop path (the stop event, seen at the next step
boundary; STOP_AT is not a checkpoint step, so Stop itself writes the checkpoint). A copy of
the stopped folder is resumed with ``resume_from`` as ``orchard resume`` does (the job read
back from the folder's job.toml): its steps STOP_AT+1..STEPS must match the reference
(loss, learning rate, gradient norm) and so must the final adapter. Checkpoints hold the
full, mode-free state, so a folder saved in one mode is also resumed in another.

Every run is a fresh job on one pool of 2 worker processes reached as ``dist.hosts`` (each
job runs in its own child process there, which also gives "mlx" its fresh mx.distributed).
A control resumes with the optimizer moments wiped, to show the comparison can fail.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.config import JobSpec
from engine.train.checkpoint import list_checkpoints, load_latest_checkpoint, save_checkpoint
from engine.train.run_dir import JOB_FILE
from tests.runtime.helpers import adapter_weights, tiny_job
from tests.runtime.resume_helpers import max_rel_diff, run, train_column, worker_pool

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]

MODES = ("all-reduce", "reduce-scatter", "parameter-server", "ring", "mlx")
# each mode saves once and resumes once in another mode
CROSS = [("ring", "parameter-server"), ("parameter-server", "mlx"), ("mlx", "reduce-scatter"),
         ("reduce-scatter", "all-reduce"), ("all-reduce", "ring")]  # fmt: skip
STEPS, STOP_AT, EVERY = 8, 5, 3  # checkpoints at 3 and 6; Stop writes the one at 5
RTOL = 1e-5
COLUMNS = ("train_loss", "learning_rate", "grad_norm")


class Runs:
    """The per-mode reference and stopped runs, made once on first use and shared."""

    def __init__(self, root: Path, hosts: list[str]):
        self.root, self.hosts = root, hosts
        self._refs: dict[str, Path] = {}
        self._stopped: dict[str, Path] = {}

    def job(self, mode: str, name: str) -> JobSpec:
        # an equal split: the reference is a separate run, and a split that follows measured
        # speed changes the float order from run to run (test_uneven_split.py resumes that)
        over = {"dist.mode": mode, "dist.workers": 2, "dist.hosts": self.hosts,
                "run.checkpoint_every": EVERY, "run.keep_checkpoints": 5, "run.name": name,
                "dist.balance": "equal"}  # fmt: skip
        return tiny_job(self.root / "runs", STEPS, **over)

    def reference(self, mode: str) -> Path:
        if mode not in self._refs:
            out = run(self.job(mode, f"{mode}-ref"), self.root / "cache")
            assert out.result.status == "finished" and out.result.step == STEPS, out.result
            self._refs[mode] = out.result.run_dir
        return self._refs[mode]

    def stopped(self, mode: str) -> Path:
        """A run stopped after STOP_AT; never resumed in place (tests resume copies)."""
        if mode not in self._stopped:
            out = run(self.job(mode, f"{mode}-stopped"), self.root / "cache", stop_after=STOP_AT)
            r = out.result
            assert r.status == "stopped" and r.step == STOP_AT, r
            assert out.steps == list(range(1, STOP_AT + 1)), out.steps
            names = [p.name for p in list_checkpoints(r.run_dir)]
            assert names == [f"step_{STOP_AT:07d}", f"step_{EVERY:07d}"], names
            ckpt = load_latest_checkpoint(r.run_dir)
            assert ckpt.meta["mode"] == mode and ckpt.meta["world"] == 2, ckpt.meta
            assert ckpt.arrays["m"].size == ckpt.arrays["params"].size  # whole moments
            assert (r.run_dir / "adapter" / "adapters.safetensors").is_file()
            self._stopped[mode] = r.run_dir
        return self._stopped[mode]

    def copy_of_stopped(self, mode: str, name: str) -> Path:
        dst = self.root / "runs" / name
        shutil.copytree(self.stopped(mode), dst)
        return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_modes")
    with worker_pool(root, 2) as hosts:
        yield Runs(root, hosts)


def resume_and_compare(runs: Runs, saved: str, resumed: str) -> None:
    """Resume a copy of ``saved``'s stopped folder in mode ``resumed``; check it against
    ``resumed``'s reference (metrics after the stop, and the final adapter)."""
    ref = runs.reference(resumed)
    folder = runs.copy_of_stopped(saved, f"{saved}-stopped-as-{resumed}")
    before = {c: train_column(folder, c) for c in COLUMNS}
    job = JobSpec.load(folder / JOB_FILE)  # what `orchard resume` reads
    assert job.dist.mode == saved
    if resumed != saved:
        job = job.with_overrides([f'dist.mode="{resumed}"'])
    out = run(job, runs.root / "cache", resume_from=folder)
    r = out.result
    assert r.status == "finished" and r.step == STEPS and r.run_dir == folder, r
    # it really continued from the Stop checkpoint: only the steps after it were computed
    assert out.start_step == STOP_AT, out.start_step
    assert out.steps == list(range(STOP_AT + 1, STEPS + 1)), out.steps
    latest = load_latest_checkpoint(folder)
    assert latest.step == STEPS and latest.meta["mode"] == resumed, latest.meta
    worst = 0.0
    for col in COLUMNS:
        want, got = train_column(ref, col), train_column(folder, col)
        assert got.shape == want.shape == (STEPS,), col
        np.testing.assert_array_equal(got[:STOP_AT], before[col][:STOP_AT])  # history kept
        d = max_rel_diff(got[STOP_AT:], want[STOP_AT:])
        assert d <= RTOL, f"{saved} -> {resumed}: {col} after the stop differs by {d:.2e}"
        worst = max(worst, d)
    losses = train_column(ref, "train_loss")
    assert losses[-1] < losses[0]  # the reference learned: the comparison is not vacuous
    want_w, got_w = adapter_weights(ref), adapter_weights(folder)
    assert set(want_w) == set(got_w) and want_w
    for name, w in want_w.items():
        gap = float(np.abs(got_w[name] - w).max())
        assert gap <= RTOL * float(np.abs(w).max()) + 1e-8, (
            f"adapter {name}: max abs diff {gap:.2e}"
        )
    log.info("%s -> %s: max relative difference %.2e", saved, resumed, worst)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_a_stopped_run_resumes_on_the_same_curve(runs, mode):
    ref, stopped = runs.reference(mode), runs.stopped(mode)
    # the first STOP_AT steps of the stopped run are the reference's (same code, same data)
    for col in COLUMNS:
        d = max_rel_diff(train_column(stopped, col), train_column(ref, col)[:STOP_AT])
        assert d <= RTOL, f"{mode}: {col} before the stop differs by {d:.2e}"
    resume_and_compare(runs, mode, mode)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("saved", "resumed"), CROSS, ids=[f"{a}-to-{b}" for a, b in CROSS])
def test_a_run_saved_in_one_mode_resumes_in_another(runs, saved, resumed):
    resume_and_compare(runs, saved, resumed)


@pytest.mark.timeout(600)
def test_lost_optimizer_moments_would_show_on_the_curve(runs):
    """Control: the same resume with AdamW's moments zeroed must miss the curve by far more
    than RTOL, so the comparisons above can catch a mode that drops its optimizer state."""
    mode = "parameter-server"  # the mode whose moments live on one rank only
    ref = train_column(runs.reference(mode), "train_loss")
    folder = runs.copy_of_stopped(mode, f"{mode}-stopped-no-moments")
    ckpt = load_latest_checkpoint(folder)
    arrays = {
        **ckpt.arrays,
        "m": mx.zeros_like(ckpt.arrays["m"]),
        "v": mx.zeros_like(ckpt.arrays["v"]),
    }
    meta = {k: v for k, v in ckpt.meta.items() if k != "step"}
    save_checkpoint(folder, ckpt.step, arrays, {**meta, "adam_step": 0}, ckpt.job_toml, 5)
    out = run(JobSpec.load(folder / JOB_FILE), runs.root / "cache", resume_from=folder)
    assert out.result.status == "finished" and out.start_step == STOP_AT, out.result
    got = train_column(folder, "train_loss")
    # step STOP_AT+1 uses only the restored weights; the steps after it use the moments
    assert max_rel_diff(got[STOP_AT : STOP_AT + 1], ref[STOP_AT : STOP_AT + 1]) <= RTOL
    d = max_rel_diff(got[STOP_AT + 1 :], ref[STOP_AT + 1 :])
    log.info("moments wiped: losses after the stop differ by %.2e", d)
    assert d > 100 * RTOL, f"wiping the moments moved the curve by only {d:.2e}"


@pytest.mark.timeout(300)
def test_orchard_resume_onto_one_worker_continues_a_two_worker_run(runs, tmp_path):
    mode = "ring"
    ref = train_column(runs.reference(mode), "train_loss")
    folder = runs.copy_of_stopped(mode, f"{mode}-stopped-cli-one")
    # the pool stands in for 2 local workers: drop the hosts so --workers 1 means "here"
    JobSpec.load(folder / JOB_FILE).with_overrides(["dist.hosts=[]"]).save(folder / JOB_FILE)
    cmd = [sys.executable, "-c", "from engine.cli.main import main; raise SystemExit(main())",
           "resume", str(folder), "--workers", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "failed" not in proc.stderr, proc.stderr[-2000:]
    got = train_column(folder, "train_loss")
    assert got.shape == (STEPS,), got
    # one worker on the global batch follows two to 1e-4 (test_distributed_matches_single)
    assert max_rel_diff(got[STOP_AT:], ref[STOP_AT:]) <= 1e-4

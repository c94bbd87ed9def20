"""`Orchard --selftest`: prove a built bundle carries what it needs, then exit 0.

It imports the engine, starts Qt offscreen, runs mlx, checks that the bundle can start a
worker process the way the engine does (``sys.executable -m engine.worker``), and trains
a couple of steps: on 2 local workers through engine.runtime.start_run when that exists,
otherwise one direct mlx-lm LoRA step on the bundled demo model.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger("orchard.selftest")
DEADLINE_S = 240.0


def check_qt() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication(["orchard-selftest"])
    label = QLabel("Orchard")
    label.show()
    app.processEvents()
    log.info("Qt %s on platform %s", app.applicationVersion() or "ok", app.platformName())
    label.close()


def check_mlx() -> None:
    import mlx.core as mx

    x = mx.arange(6, dtype=mx.float32).reshape(2, 3)
    assert float((x @ x.T).sum()) == 83.0, "mlx matmul gave a wrong result"
    if sys.platform == "darwin":
        assert mx.metal.is_available(), "Metal is not available (is mlx.metallib bundled?)"
    log.info("mlx %s ok (device %s)", mx.__version__, mx.default_device())


def check_worker_spawn() -> None:
    """The runtime starts workers as [sys.executable, '-m', 'engine.worker', ...]."""
    cmd = [sys.executable, "-m", "engine.worker", "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "worker" not in done.stdout:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")
    log.info("worker process starts: ok")


def train_two_workers(out_dir: str) -> str:
    """Two steps of the demo job on 2 local worker processes, then a PEFT export of it."""
    from engine.cli.export_cmd import export_run
    from engine.config import JobSpec
    from engine.runtime import start_run

    job = JobSpec()
    job.run.steps, job.run.batch_size, job.run.val_every = 2, 4, 0
    job.run.checkpoint_every, job.run.out_dir, job.run.name = 0, out_dir, "selftest"
    job.dist.workers = 2
    handle = start_run(job, lambda _event: None)
    result = handle.wait(timeout=DEADLINE_S * 0.7)
    if result is None:
        handle.stop()
        handle.wait(timeout=30)
        raise RuntimeError(f"the 2-worker run did not finish in {DEADLINE_S * 0.7:.0f} s")
    if result.status != "finished":
        raise RuntimeError(f"the 2-worker run ended {result.status}: {result.message}")
    export_run(result.run_dir, "peft", os.path.join(out_dir, "peft"))
    return (
        f"2 local workers via engine.runtime.start_run, loss {result.train_loss:.3f}; PEFT export"
    )


def train_direct_step() -> str:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from engine.config import ModelSpec
    from engine.model.load import load_model

    model = load_model(ModelSpec()).model
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 2.0, "dropout": 0.0})
    tokens = mx.array([[1, 37, 204, 91, 300, 12, 7, 450, 3, 99, 18, 256]])

    def loss_fn(m: nn.Module) -> mx.array:
        return nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    opt = optim.Adam(learning_rate=1e-2)
    losses = []
    for _ in range(3):
        loss, grads = nn.value_and_grad(model, loss_fn)(model)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        losses.append(loss.item())
    if not losses[-1] < losses[0]:
        raise RuntimeError(f"the LoRA steps did not lower the loss: {losses}")
    return f"direct mlx-lm LoRA steps (loss {losses[0]:.3f} -> {losses[-1]:.3f})"


def check_training() -> None:
    try:
        from engine.runtime import start_run  # noqa: F401
    except ImportError:
        how = train_direct_step()
    else:
        with tempfile.TemporaryDirectory(prefix="orchard-selftest-") as tmp:
            how = train_two_workers(tmp)
    log.info("training: %s", how)


def main(argv: list[str] | None = None) -> int:
    verbose = "--verbose" in (argv or [])
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="selftest: %(message)s"
    )
    # A hung check must not hang CI: exit hard after the deadline.
    watchdog = threading.Timer(DEADLINE_S, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    start = time.monotonic()
    try:
        import engine.export  # noqa: F401
        from engine.config import JobSpec

        JobSpec().validate()
        check_mlx()
        check_qt()
        check_worker_spawn()
        check_training()
    except Exception as e:  # a verdict first; the traceback helps whoever fixes the bundle
        log.debug("selftest traceback", exc_info=True)
        log.error("FAILED: %s: %s", type(e).__name__, e)
        return 1
    finally:
        watchdog.cancel()
    log.info("all checks passed in %.1f s", time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

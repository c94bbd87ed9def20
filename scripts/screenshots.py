"""Render every page of the app with real data into docs/screenshots/*.png.

Starts as a first launch (empty settings: the welcome shows), runs a short real demo run
(2 local workers) so Monitor, Results and Runs show live data, and loads a dataset with
mistakes so the Problems view shows what a user would see.

    QT_QPA_PLATFORM=offscreen python scripts/screenshots.py [--steps 20]
    DISPLAY=:99 QT_QPA_PLATFORM=xcb python scripts/screenshots.py   # a real window under Xvfb
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

log = logging.getLogger("screenshots")
OUT = ROOT / "docs" / "screenshots"
SIZE = (1280, 860)


def wait_until(app: QApplication, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(10):  # let queued redraws land
        app.processEvents()
        time.sleep(0.02)


def bad_dataset(folder: Path) -> Path:
    rows = [
        json.dumps({"instruction": f"What is {i} + {i}?", "output": f"{i} + {i} = {2 * i}."})
        for i in range(12)
    ]
    rows[2] = '{"instruction": "Name a fruit", "output": "apple",}'
    rows[5] = json.dumps({"instruction": "What colour is the sky?"})
    rows[8] = json.dumps({"prompt": "Mixed formats", "completion": "are not allowed in one file"})
    rows[10] = rows[3]  # an exact duplicate, listed with the line it repeats
    path = folder / "mistakes.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = QApplication(sys.argv[:1])
    from app.main_window import MainWindow
    from app.settings import AppSettings

    tmp = Path(tempfile.mkdtemp(prefix="orchard-shots-"))
    settings = AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    w = MainWindow(settings, discover=False)
    w.resize(*SIZE)
    w.show()
    w.job.set("run", "out_dir", str(tmp / "runs"))
    w.job.set("run", "steps", args.steps)
    w.job.set("run", "val_every", max(1, args.steps // 4))
    OUT.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        w.go_to(page)
        if hasattr(page, "clock"):
            page.clock.flush()  # its charts, all of them, now (they come up one per tick)
        for _ in range(5):
            app.processEvents()
            time.sleep(0.02)
        path = OUT / f"{name}.png"
        w.grab().save(str(path))
        log.info("wrote %s", path.relative_to(ROOT))

    wait_until(
        app,
        lambda: w.dataset_page.view is not None and w.model_page.info is not None,
        120,
        "dataset and model",
    )
    shot(w.cluster_page, "1-cluster")
    w.dataset_page.record_list.setCurrentRow(1)
    shot(w.dataset_page, "2-dataset")
    shot(w.model_page, "3-model")
    w.go_to(w.training_page)  # opening it measures this machine and plans the run
    wait_until(app, lambda: w.training_page.plan_panel.view is not None, 120, "the plan")
    shot(w.training_page, "4-training")

    w.start_run()  # the preflight checks the job on the pool, then the run starts
    wait_until(app, lambda: w.runner.running, 120, "the preflight and the start")
    wait_until(
        app, lambda: w.monitor_page.state in ("finished", "failed", "stopped"), 600, "the demo run"
    )
    if w.monitor_page.state != "finished":
        raise SystemExit(
            f"the demo run ended {w.monitor_page.state}: {w.monitor_page.state_label.full_text()}"
        )
    shot(w.monitor_page, "5-monitor")
    wait_until(app, lambda: bool(w.results_page.adapter_dir), 30, "the adapter")
    # The prompt comes from the run's dataset (a held-out record), as a user first sees it.
    wait_until(app, lambda: bool(w.results_page.prompt.toPlainText()), 30, "the sample prompt")
    w.results_page.generate()
    wait_until(app, lambda: w.results_page.generate_button.isEnabled(), 180, "generation")
    shot(w.results_page, "6-results")
    w.go_to(w.runs_page)
    wait_until(app, lambda: w.runs_page.chart.point_count("train") > 0, 60, "the runs list")
    shot(w.runs_page, "7-runs")

    w.dataset_page.open_path(str(bad_dataset(tmp)))
    wait_until(
        app,
        lambda: (
            w.dataset_page.view is not None and w.dataset_page.view.path.endswith("mistakes.jsonl")
        ),
        60,
        "the bad dataset",
    )
    w.dataset_page.problem_table.selectRow(0)
    wait_until(
        app,
        lambda: "mistakes.jsonl" in w.dataset_page.problem_source.toPlainText(),
        30,
        "the problem line",
    )
    shot(w.dataset_page, "2b-dataset-problems")
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A real app process for the kill -9 test: the main window, offscreen, starts a long run.

Usage: app_proc.py <settings.ini> <runs dir> <steps>
Prints STEP=<n> as each train metric reaches the window (the engine folder comes from
$ORCHARD_ENGINE_DIR, as the test set it).
"""

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

app = QApplication(sys.argv[:1])

from app.main_window import MainWindow  # noqa: E402
from app.settings import AppSettings  # noqa: E402

window = MainWindow(AppSettings(QSettings(sys.argv[1], QSettings.Format.IniFormat)), discover=False)
for section, name, value in (
    ("run", "out_dir", sys.argv[2]), ("run", "steps", int(sys.argv[3])), ("run", "batch_size", 2),
    ("run", "val_every", 0), ("run", "checkpoint_every", 0), ("data", "max_seq_len", 64),
    ("dist", "workers", 1),
):  # fmt: skip
    window.job.set(section, name, value)
window.bridge.metric.connect(
    lambda e: print(f"STEP={e.step}", flush=True) if e.kind == "train" else None
)


def start_when_loaded() -> None:
    if window.model_page.info is None or window.dataset_page.view is None:
        QTimer.singleShot(100, start_when_loaded)
    else:
        window.start_run()


window.show()
QTimer.singleShot(0, start_when_loaded)
sys.exit(app.exec())

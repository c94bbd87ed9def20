"""Entry point: ``python -m app`` or ``orchard app`` (engine/cli calls ``main``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from app.errors import ErrorReporter, install_excepthook
from app.gc_gui_thread import GuiThreadCollector
from app.settings import APPLICATION, ORGANIZATION
from engine.no_torch import keep_torch_out

ICON = Path(__file__).resolve().parent.parent / "resources" / "icons" / "orchard-512.png"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orchard app", description="The Orchard desktop app")
    parser.add_argument("dataset", nargs="?", help="a dataset file or folder to open")
    parser.add_argument("--job", help="a job TOML file to open")
    parser.add_argument(
        "--no-discovery", action="store_true", help="do not browse for workers (Bonjour)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the app until its window closes; returns the exit code."""
    keep_torch_out()  # the app's previews load tokenizers (engine/no_torch.py)
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = QApplication.instance() or QApplication(argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("Orchard")
    if ICON.is_file():
        app.setWindowIcon(QIcon(str(ICON)))
    reporter = ErrorReporter()
    install_excepthook(reporter)
    collector = GuiThreadCollector(app)  # no Qt object is ever destroyed in a pool thread

    from app.main_window import MainWindow  # after QApplication: pages build widgets on import

    window = MainWindow(discover=not args.no_discovery)
    reporter.message.connect(window.show_message)
    if args.job:
        window.training_page.open_job(args.job)
    if args.dataset:
        window.dataset_page.open_path(args.dataset)
    window.show()
    try:
        return app.exec()
    finally:
        collector.close()

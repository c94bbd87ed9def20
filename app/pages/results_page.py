"""Results: the adapter folder, exports, and base-vs-adapter generation side by side."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.generation import GenerationProcess
from app.prompts import sample_prompt
from app.tasks import run_task
from app.widgets.page import Page, group, hint
from app.widgets.text import ElidedLabel, home_path
from app.widgets.wheel import guard_wheel
from engine.cli.export_cmd import export_run

ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")
NO_ADAPTER = "No adapter yet. Finish a run (or pick one under Runs) to see it here."


class ResultsPage(Page):
    title = "Results"
    subtitle = "Your trained adapter. It loads in mlx_lm as it is: mlx_lm.generate --adapter-path <folder>."

    message = Signal(str, str)
    exported = Signal(str)  # the folder written

    def __init__(self) -> None:
        super().__init__()
        self.adapter_dir = ""
        self.model = ""
        self._exporting = False
        self._sample = ""  # the prompt this page put in the box (replaced with the adapter)

        box, form = group("Adapter")
        self.adapter_label = ElidedLabel(NO_ADAPTER)
        self.adapter_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Folder", self.adapter_label)
        self.files_label = hint()
        form.addRow("", self.files_label)
        buttons = QHBoxLayout()
        self.reveal = QPushButton("Show in file manager")
        self.reveal.clicked.connect(self._reveal)
        self.export_peft = QPushButton("Export for PEFT…")
        self.export_peft.setToolTip("Write a Hugging Face PEFT adapter (adapter_model.safetensors)")
        self.export_peft.clicked.connect(lambda: self._ask_export("peft"))
        self.fuse = QPushButton("Fuse into model…")
        self.fuse.setToolTip(
            "Write the base model with the adapter merged in (mlx_lm.load opens it)"
        )
        self.fuse.clicked.connect(lambda: self._ask_export("fused"))
        for b in (self.reveal, self.export_peft, self.fuse):
            buttons.addWidget(b)
        buttons.addStretch(1)
        form.addRow("", buttons)
        self.body.addWidget(box)

        box, form = group("Try it")
        prompt_row = QHBoxLayout()
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText(
            "Type a prompt, then Generate. Base and adapter answer side by side."
        )
        self.prompt.setFixedHeight(70)
        side = QWidget()
        side_layout = QGridLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(64)
        self.max_tokens.setToolTip("Most tokens to generate")
        guard_wheel(self.max_tokens)
        self.generate_button = QPushButton("Generate")
        self.generate_button.clicked.connect(self.generate)
        side_layout.addWidget(QLabel("Max tokens"), 0, 0)
        side_layout.addWidget(self.max_tokens, 0, 1)
        side_layout.addWidget(self.generate_button, 1, 0, 1, 2)
        prompt_row.addWidget(self.prompt, 1)
        prompt_row.addWidget(side)
        form.addRow(prompt_row)
        outputs = QGridLayout()
        self.base_out = QPlainTextEdit()
        self.adapter_out = QPlainTextEdit()
        for c, (title, view) in enumerate(
            (("Base model", self.base_out), ("With adapter", self.adapter_out))
        ):
            view.setReadOnly(True)
            view.setMinimumHeight(160)
            outputs.addWidget(QLabel(f"<b>{title}</b>"), 0, c)
            outputs.addWidget(view, 1, c)
        form.addRow(outputs)
        self.body.addWidget(box)
        self.body.addStretch(1)

        self.base_gen = GenerationProcess(self)
        self.adapter_gen = GenerationProcess(self)
        self.base_gen.finished.connect(self.base_out.setPlainText)
        self.adapter_gen.finished.connect(self.adapter_out.setPlainText)
        self.base_gen.failed.connect(lambda m: self._gen_failed(self.base_out, m))
        self.adapter_gen.failed.connect(lambda m: self._gen_failed(self.adapter_out, m))
        for g in (self.base_gen, self.adapter_gen):
            g.finished.connect(self._gen_ended)
            g.failed.connect(self._gen_ended)
        self._update()

    def show_adapter(self, adapter_dir: str, model: str, files: list[str] | None = None) -> None:
        """Point the page at an adapter folder (``files`` as listed off the GUI thread).

        The folder is kept absolute: the generation processes and the user's own tools may
        not share the folder the app was started from."""
        adapter_dir = str(Path(adapter_dir).absolute())
        self.adapter_dir, self.model = adapter_dir, model
        self.adapter_label.set_full_text(home_path(adapter_dir))
        if files is not None:
            missing = [f for f in ADAPTER_FILES if f not in files]
            self.files_label.setText(
                f"Missing {', '.join(missing)}"
                if missing
                else "adapters.safetensors · adapter_config.json"
            )
        self._update()
        if self.prompt.toPlainText().strip() in ("", self._sample):
            run_task(
                sample_prompt,
                adapter_dir,
                owner=self,
                on_done=lambda text: self._put_sample(adapter_dir, text),
            )

    def _put_sample(self, adapter_dir: str, text: str) -> None:
        """A prompt from the run's dataset, unless the user typed their own meanwhile."""
        if adapter_dir != self.adapter_dir or not text:
            return
        if self.prompt.toPlainText().strip() in ("", self._sample):
            self._sample = text
            self.prompt.setPlainText(text)

    def _update(self) -> None:
        has = bool(self.adapter_dir)
        self.reveal.setEnabled(has)
        self.export_peft.setEnabled(has and not self._exporting)
        self.fuse.setEnabled(has and not self._exporting)
        busy = self.base_gen.running() or self.adapter_gen.running()
        self.generate_button.setEnabled(has and not busy)
        self.generate_button.setToolTip("" if has else "Train or choose an adapter first")

    def _reveal(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.adapter_dir))))

    def _ask_export(self, fmt: str) -> None:
        title = "Choose a new, empty folder for the " + (
            "PEFT adapter" if fmt == "peft" else "fused model"
        )
        out = QFileDialog.getExistingDirectory(self, title)
        if out:
            self.export(fmt, out)

    def export(self, fmt: str, out: str) -> None:
        """Export on a worker thread (fused export loads the base model)."""
        self._exporting = True
        self._update()
        self.message.emit(f"Exporting ({fmt}) to {out}…", "info")
        run_task(
            export_run,
            self.adapter_dir,
            fmt,
            out,
            owner=self,
            on_done=lambda path: self._exported(fmt, str(path)),
            on_error=self._export_failed,
        )

    def _exported(self, fmt: str, path: str) -> None:
        self._exporting = False
        self._update()
        self.message.emit(f"Exported ({fmt}) to {path}", "info")
        self.exported.emit(path)

    def _export_failed(self, message: str) -> None:
        self._exporting = False
        self._update()
        self.message.emit(f"Export failed: {message}", "error")

    def generate(self) -> None:
        prompt = self.prompt.toPlainText().strip()
        if not prompt:
            self.message.emit("Type a prompt first.", "warning")
            return
        self.clear_message("warning")
        tokens = self.max_tokens.value()
        self.base_out.setPlainText("Generating…")
        self.adapter_out.setPlainText("Generating…")
        self.base_gen.start(self.model, prompt, tokens)
        self.adapter_gen.start(self.model, prompt, tokens, adapter=self.adapter_dir)
        self._update()

    def _gen_failed(self, view: QPlainTextEdit, message: str) -> None:
        view.setPlainText(f"Generation failed: {message}")

    def _gen_ended(self, _text: str) -> None:
        self._update()

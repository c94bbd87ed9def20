"""Model & LoRA: pick the base model, see what it is, choose what LoRA trains, see the memory bill."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QWidget,
)

from app.cluster_model import ClusterModel
from app.job_model import JobModel
from app.settings import AppSettings
from app.tasks import run_task
from app.widgets.controls import BoolControl, ChoiceControl, NumberControl
from app.widgets.memory_table import MemoryTable
from app.widgets.page import Page, group, hint
from app.widgets.text import breakable_html, wrapping_label
from app.widgets.wheel import guard_wheel
from engine.config import DEMO_MODEL, JobSpec
from engine.model.hub import inspect_remote
from engine.model.inspect import ModelInfo, inspect_model
from engine.model.load import looks_like_local_path, resolve_model_dir
from engine.preflight import PreflightResult, preflight

DEMO_NOTE = (
    "<b>Demo model:</b> a tiny 260K-parameter TinyStories model bundled with Orchard so you can "
    "try the whole flow in seconds. It is <i>not</i> a useful assistant: pick a real model "
    "(a local folder or a Hugging Face id) for real work."
)


def alpha_caution(alpha: float) -> str:
    """Alpha 0 is allowed (engine/config.py) but scales every LoRA update to nothing."""
    if alpha == 0:
        return (
            "Alpha 0 scales the adapter's update to zero (scale = alpha / rank): the run "
            "would train an adapter that changes nothing."
        )
    return ""


def inspect_path(path: str) -> ModelInfo:
    """Read config + headers of 'demo', a folder, or a Hugging Face id: an id is read from the
    cache or by range requests, never downloaded here (worker thread)."""
    if not Path(path).expanduser().exists() and not looks_like_local_path(path):
        return inspect_remote(path).info
    return inspect_model(resolve_model_dir(path))


def parse_layers(text: str) -> list[int]:
    """'0-3, 7' -> [0, 1, 2, 3, 7]; empty or 'all' -> [] (every layer)."""
    text = text.strip().lower()
    if text in ("", "all"):
        return []
    out: set[int] = set()
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"layers: {part!r} is not a layer number or a range like 0-3")
        lo, hi = int(m[1]), int(m[2] or m[1])
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return sorted(out)


def format_layers(layers: list[int]) -> str:
    return ", ".join(map(str, layers))


class ModelPage(Page):
    title = "Model & LoRA"
    subtitle = "Choose the base model and what LoRA trains. The memory estimate updates as you go."

    inspected = Signal(object)  # ModelInfo
    message = Signal(str, str)

    def __init__(self, job: JobModel, cluster: ClusterModel, settings: AppSettings):
        super().__init__()
        self.job, self.cluster, self.settings = job, cluster, settings
        self.info: ModelInfo | None = None
        self._inspecting = ""  # path being read now
        self._inspected = ""  # path that self.info describes

        box, form = group("Base model")
        sources = QWidget()
        row = QHBoxLayout(sources)
        row.setContentsMargins(0, 0, 0, 0)
        self.use_demo = QRadioButton("Demo model")
        self.use_folder = QRadioButton("Local folder")
        self.use_hub = QRadioButton("Hugging Face")
        self._source = QButtonGroup(self)
        for b in (self.use_demo, self.use_folder, self.use_hub):
            self._source.addButton(b)
            row.addWidget(b)
        row.addStretch(1)
        form.addRow("Source", sources)
        folder_row = QWidget()
        fr = QHBoxLayout(folder_row)
        fr.setContentsMargins(0, 0, 0, 0)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("/path/to/model (config.json + *.safetensors)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        fr.addWidget(self.folder, 1)
        fr.addWidget(browse)
        form.addRow("Folder", folder_row)
        self.hub = QComboBox()
        self.hub.setEditable(True)
        self.hub.lineEdit().setPlaceholderText("e.g. mlx-community/Qwen2.5-0.5B-Instruct-4bit")
        self.hub.addItems(settings.recent("models_hub"))
        guard_wheel(self.hub)
        hub_row = QWidget()
        hr = QHBoxLayout(hub_row)
        hr.setContentsMargins(0, 0, 0, 0)
        pick = QPushButton("Models…")
        pick.setToolTip("The models in the Hugging Face cache; look up and download an id")
        pick.clicked.connect(self._open_picker)
        hr.addWidget(self.hub, 1)
        hr.addWidget(pick)
        form.addRow("Model id", hub_row)
        self.demo_note = QLabel(DEMO_NOTE)
        self.demo_note.setWordWrap(True)
        self.demo_note.setStyleSheet(
            "background:#f1f8e9; border:1px solid #c5e1a5; padding:6px; border-radius:4px;"
        )
        self.demo_note.setMaximumHeight(64)  # a wrapped label in a form otherwise grows tall
        form.addRow("", self.demo_note)
        self.info_label = wrapping_label("…")
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Model", self.info_label)
        self.body.addWidget(box)

        box, form = group("QLoRA")
        qlora = QHBoxLayout()
        qlora.addWidget(BoolControl(job, "model", "quantize", "Quantize the base (less memory)"))
        qlora.addSpacing(16)
        for label, name in (("Bits", "bits"), ("Group size", "group_size")):
            qlora.addWidget(QLabel(label))
            qlora.addWidget(ChoiceControl(job, "model", name))
        qlora.addStretch(1)
        form.addRow(qlora)
        self.body.addWidget(box)

        box, form = group("LoRA")
        form.addRow("Rank", NumberControl(job, "lora", "rank", slider_range=(1, 128)))
        self.alpha = NumberControl(
            job, "lora", "alpha", slider_range=(0, 256), decimals=1, warn=alpha_caution
        )
        form.addRow("Alpha", self.alpha)
        form.addRow(
            "Dropout", NumberControl(job, "lora", "dropout", slider_range=(0, 0.5), decimals=2)
        )
        self.modules_box = QWidget()
        self.modules_grid = QGridLayout(self.modules_box)
        self.modules_grid.setContentsMargins(0, 0, 0, 0)
        self.module_checks: dict[str, QCheckBox] = {}
        form.addRow("Target modules", self.modules_box)
        self.layers = QLineEdit()
        self.layers.setPlaceholderText("all layers (or e.g. 0-3, 7)")
        self.layers.setToolTip("Layer indices to adapt; empty means every layer")
        self.layers.editingFinished.connect(self._layers_edited)
        self.layers_hint = hint()
        form.addRow("Layers", self.layers)
        form.addRow("", self.layers_hint)
        form.addRow(
            "Bias",
            ChoiceControl(
                job,
                "lora",
                "bias",
                {
                    "none": "none (biases frozen)",
                    "all": "all biases train",
                    "lora_only": "biases of adapted modules train",
                },
            ),
        )
        form.addRow("Type", ChoiceControl(job, "lora", "type", {
            "lora": "LoRA", "dora": "DoRA (LoRA + a trained magnitude per output)"}))  # fmt: skip
        form.addRow("", BoolControl(job, "run", "grad_checkpoint",
                                    "Gradient checkpointing: less memory, about a third slower"))  # fmt: skip
        self.trainable = hint()
        form.addRow("", self.trainable)
        self.body.addWidget(box)

        box, form = group("Memory per worker")
        self.memory = MemoryTable()
        form.addRow(self.memory)
        self.memory_hint = hint()
        form.addRow(self.memory_hint)
        self.body.addWidget(box)
        self.body.addStretch(1)

        self._checking_fit = False  # a preflight for the memory table is running
        self._check_fit_again = False  # the settings changed while it ran
        self._estimate_timer = QTimer(self, singleShot=True, interval=150)
        self._estimate_timer.timeout.connect(self.update_estimate)
        self.use_demo.toggled.connect(lambda on: on and self._set_model(DEMO_MODEL))
        self.use_folder.toggled.connect(
            lambda on: on and self.folder.text() and self._set_model(self.folder.text())
        )
        self.use_hub.toggled.connect(
            lambda on: on and self.hub.currentText() and self._set_model(self.hub.currentText())
        )
        self.folder.editingFinished.connect(
            lambda: self.folder.text() and self._pick_folder(self.folder.text())
        )
        self.hub.lineEdit().returnPressed.connect(lambda: self._pick_hub(self.hub.currentText()))
        self.hub.activated.connect(lambda i: self._pick_hub(self.hub.itemText(i)))
        job.changed.connect(self._on_change)
        job.reset.connect(self.refresh)
        cluster.changed.connect(self._estimate_timer.start)
        self.refresh()

    # model source ---------------------------------------------------------------------------
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Choose a model folder", self.settings.last_folder("models")
        )
        if path:
            self.settings.remember_folder("models", str(Path(path).parent))
            self._pick_folder(path)

    def _pick_folder(self, path: str) -> None:
        self.folder.setText(path)
        self.use_folder.setChecked(True)
        self._set_model(path)

    def _open_picker(self) -> None:
        from app.widgets.model_picker import ModelPicker

        picker = ModelPicker(self, self.hub.currentText().strip())
        picker.chosen.connect(self._pick_hub)
        picker.open()

    def _pick_hub(self, model_id: str) -> None:
        model_id = model_id.strip()
        if model_id:
            self.use_hub.setChecked(True)
            self._set_model(model_id)

    def _set_model(self, path: str) -> None:
        self.job.set("model", "path", path)

    def refresh(self) -> None:
        path = self.job.spec.model.path
        buttons = [self.use_demo, self.use_folder, self.use_hub]
        for b in buttons:
            b.blockSignals(True)
        if path == DEMO_MODEL:
            self.use_demo.setChecked(True)
        elif "/" in path and not path.startswith(("/", ".", "~")) and path.count("/") == 1:
            self.use_hub.setChecked(True)
            self.hub.setEditText(path)
        else:
            self.use_folder.setChecked(True)
            self.folder.setText(path)
        for b in buttons:
            b.blockSignals(False)
        self.demo_note.setVisible(path == DEMO_MODEL)
        self.layers.setText(format_layers(self.job.spec.lora.layers))
        self._refuse_layers("")
        self._check_modules()
        self.inspect(path)

    def inspect(self, path: str) -> None:
        """Read the model's config and headers in the background; never blocks the window."""
        if path == self._inspecting or (self.info is not None and path == self._inspected):
            return
        self._inspecting = path
        self.info_label.setText(f"Reading {path}…")
        run_task(
            inspect_path,
            path,
            owner=self,
            on_done=lambda info: self._inspected_ok(path, info),
            on_error=lambda m: self._inspected_bad(path, m),
        )

    def _inspected_ok(self, path: str, info: ModelInfo) -> None:
        if path != self.job.spec.model.path:
            return  # the user moved on while we were reading
        self._inspecting, self._inspected, self.info = "", path, info
        self.clear_message("error")  # a model that failed to read before is fixed
        quant = f", quantized {info.quantization.get('bits')}-bit" if info.quantization else ""
        self.info_label.setText(
            f"{info.model_type} · {info.param_count / 1e6:,.2f}M parameters · {info.num_layers} layers · "
            f"hidden {info.hidden_size} · vocab {info.vocab_size} · {info.dtype}{quant}"
            + ("" if info.supported else "  <b>(not supported by mlx-lm)</b>")
        )
        if path != DEMO_MODEL:
            kind = "models_hub" if self.use_hub.isChecked() else "models_folder"
            self.settings.add_recent(kind, path)
        self._build_module_checks(info)
        self.layers_hint.setText(
            f"This model has {info.num_layers} layers (0–{info.num_layers - 1})."
        )
        self.inspected.emit(info)
        self._estimate_timer.start()

    def _inspected_bad(self, path: str, message: str) -> None:
        self._inspecting = ""
        if path != self.job.spec.model.path:
            return
        self.info = None
        self.info_label.setText(f"<span style='color:#c62828'>{breakable_html(message)}</span>")
        self.message.emit(message, "error")
        self._estimate_timer.start()

    # LoRA targets and layers -----------------------------------------------------------------
    def _build_module_checks(self, info: ModelInfo) -> None:
        for check in self.module_checks.values():
            check.deleteLater()
        self.module_checks.clear()
        for i, module in enumerate(info.linear_modules):
            check = QCheckBox(module.name)
            check.setToolTip(
                f"{module.in_features} → {module.out_features}"
                + (", has a bias" if module.has_bias else "")
            )
            check.toggled.connect(self._modules_edited)
            self.modules_grid.addWidget(check, i // 3, i % 3)
            self.module_checks[module.name] = check
        self._check_modules()

    def _check_modules(self) -> None:
        targets = self.job.spec.lora.target_modules
        for name, check in self.module_checks.items():
            check.blockSignals(True)
            check.setChecked(any(name == t or name.endswith("." + t) for t in targets))
            check.blockSignals(False)

    def _modules_edited(self) -> None:
        names = [n for n, c in self.module_checks.items() if c.isChecked()]
        leaves = [n.rsplit(".", 1)[-1] for n in self.module_checks]
        # Write the short name ("q_proj") when it is unambiguous, as mlx-lm users expect.
        chosen = [
            n.rsplit(".", 1)[-1] if leaves.count(n.rsplit(".", 1)[-1]) == 1 else n for n in names
        ]
        if not chosen:
            self.message.emit("Choose at least one target module for LoRA.", "warning")
            self._check_modules()
            return
        self.job.set("lora", "target_modules", chosen)

    def _layers_edited(self) -> None:
        try:
            layers = parse_layers(self.layers.text())
        except ValueError as e:
            self._refuse_layers(str(e))
            return
        if self.info is not None and layers and max(layers) >= self.info.num_layers:
            self._refuse_layers(
                f"layers: this model has layers 0–{self.info.num_layers - 1}, not {max(layers)}"
            )
            return
        self._refuse_layers("")
        self.job.set("lora", "layers", layers)

    def _refuse_layers(self, why: str) -> None:
        """Say why next to the field and keep what was typed, so it can be corrected."""
        self.job.refuse("lora", "layers", f"lora.{why}" if why else "")
        self.layers.setStyleSheet("QLineEdit { border: 2px solid #c62828; }" if why else "")
        if why:
            kept = format_layers(self.job.spec.lora.layers) or "all layers"
            self.layers_hint.setText(
                f"<span style='color:#c62828'>Not used: {breakable_html(why)}. "
                f"The job keeps {kept}.</span>"
            )
        elif self.info is not None:
            self.layers_hint.setText(
                f"This model has {self.info.num_layers} layers (0–{self.info.num_layers - 1})."
            )

    def _on_change(self, section: str, name: str) -> None:
        if (section, name) == ("model", "path"):
            self.refresh()
        elif (section, name) == ("lora", "target_modules"):
            self._check_modules()
        elif (section, name) == ("lora", "layers"):
            self.layers.setText(format_layers(self.job.spec.lora.layers))
            self._refuse_layers("")
        if section in ("model", "lora", "run", "dist", "data"):
            self._estimate_timer.start()

    # memory: what Start's preflight says, per machine (off the GUI thread) ------------------------
    def update_estimate(self) -> None:
        """Ask the preflight (engine/preflight.py, the one Start runs: the data's real width,
        each machine's memory) on a pool thread; one check at a time, the newest shown."""
        if self.info is None:
            self.memory.show_estimate(None, self.job.spec, [], self.memory_hint, self.trainable)
            return
        if self._checking_fit:
            self._check_fit_again = True
            return
        self._checking_fit, self._check_fit_again = True, False
        job, info = copy.deepcopy(self.job.spec), self.info
        hosts = {w.address: w.memory_bytes for w in self.cluster.remote() if w.memory_bytes}
        local = self.cluster.local.memory_bytes or None  # as Start passes them (main_window)
        names = {"this machine": self.cluster.local.name}
        names.update({w.address: w.name for w in self.cluster.remote()})
        run_task(preflight, job, host_memory=hosts, local_memory=local, owner=self,
                 on_done=lambda r: self._fit_checked(job, info, names, r),
                 on_error=lambda m: self._fit_checked(job, info, names, None, m))  # fmt: skip

    def _fit_checked(self, job: JobSpec, info: ModelInfo, names: dict[str, str],
                     result: PreflightResult | None, error: str = "") -> None:  # fmt: skip
        self._checking_fit = False
        if self._check_fit_again or info is not self.info:  # settings moved on: check again
            self.update_estimate()
            return
        if result is not None and result.fits:
            self.memory.show_fits(result, info, names, self.memory_hint, self.trainable)
            return
        # the preflight could not size the run (the dataset or model does not read yet):
        # the estimate at max_seq_len, saying why it is not Start's figure
        self.memory.show_estimate(info, job, self.cluster.rows(), self.memory_hint, self.trainable)
        why = error
        if result is not None and result.refusals:
            first = result.refusals[0]
            why = f"{first.kind}: {first.message.splitlines()[0]}"
        elif result is not None and result.notes:
            why = result.notes[0]
        if why:
            self.memory_hint.setText(self.memory_hint.text() + "<br>Start's own check cannot "
                                     f"size it yet: {breakable_html(why)}")  # fmt: skip

"""`orchard export RUN_DIR --format peft|fused|mlx --out DIR`: a run's adapter for other tools.

mlx: the adapter folder as it is (mlx_lm.generate --adapter-path); peft: Hugging Face PEFT;
fused: the base with the adapter merged (engine.lora.fuse_adapter; mlx_lm.load opens it).
The export is written to a sibling temp folder and renamed into place, so a failed export
leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from engine.config import ConfigError, JobSpec
from engine.export.adapter import CONFIG_FILE, AdapterFiles, ExportError, read_adapter

log = logging.getLogger(__name__)

FORMATS = ("mlx", "peft", "fused")


def find_adapter_dir(run_dir: Path) -> Path:
    """``RUN_DIR/adapter``; an adapter folder given directly is accepted too."""
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run folder")
    for candidate in (run_dir / "adapter", run_dir):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ExportError(
        f"{run_dir}: this run has no adapter yet (expected {run_dir / 'adapter' / CONFIG_FILE}; "
        "the adapter is written when a run finishes or stops)"
    )


def base_model_for(run_dir: Path, adapter: AdapterFiles) -> str:
    """The run's base model: job.toml's model.path, else the adapter config's "model"."""
    job_file = run_dir / "job.toml"
    if job_file.is_file():
        try:
            return JobSpec.load(job_file).model.path
        except ConfigError as e:
            raise ExportError(f"{job_file}: {e}") from None
    if adapter.base_model is None:
        raise ExportError(
            f"{adapter.folder / CONFIG_FILE}: model: no base model named, and no job.toml "
            f"in {run_dir} to take it from"
        )
    return adapter.base_model


def check_out(out: Path) -> None:
    if out.is_file():
        raise ExportError(f"{out}: --out is a file; expected a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out}: --out already holds files; choose a new or empty folder")


def export_run(run_dir: str | Path, fmt: str, out: str | Path, dequantize: bool = False) -> Path:
    """Export a run's adapter to ``out`` in ``fmt``; ExportError names what is wrong."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if dequantize and fmt != "fused":
        raise ExportError(f"--dequantize: only applies to --format fused, not {fmt}")
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    check_out(out)
    adapter = read_adapter(find_adapter_dir(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would otherwise become the export's mode
    try:
        if fmt == "mlx":
            shutil.copytree(adapter.folder, tmp, dirs_exist_ok=True)
        elif fmt == "peft":
            from engine.export.peft_export import export_peft

            export_peft(adapter, tmp, base_model=base_model_for(run_dir, adapter))
        else:
            # QLoRA settings travel in the adapter config's "orchard" section.
            from engine.lora.fuse import fuse_adapter

            fuse_adapter(adapter.folder, tmp, base_model_for(run_dir, adapter), dequantize)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s as %s to %s", run_dir, fmt, out)
    return out


def export_main(run_dir: str, fmt: str, out: str, dequantize: bool = False) -> int:
    """CLI adapter: 0 on success, 2 with a one-line message naming the bad input."""
    from engine.lora.apply import LoraError
    from engine.model.errors import ModelError

    try:
        path = export_run(run_dir, fmt, out, dequantize)
    except (ExportError, LoraError, ModelError) as e:  # bad input: one line, no traceback
        sys.stderr.write(f"orchard export: {e}\n")
        return 2
    sys.stdout.write(f"exported ({fmt}): {path}\n")
    return 0

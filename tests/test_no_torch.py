"""engine/no_torch.py: a tokenizer loads without importing PyTorch where it is installed.

The machine running the tests has no PyTorch, so a stand-in is put on the path: a package
named ``torch`` with its distribution metadata (transformers reads the version) whose import
leaves a mark on disk. Each case runs in a fresh interpreter, as an Orchard process starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "resources" / "models" / "stories260K"  # the bundled demo model

LOAD = """
import sys
from engine.no_torch import keep_torch_out
if sys.argv[1] == "keep-out":
    print("kept out:", keep_torch_out())
from engine.model.load import load_tokenizer
tok = load_tokenizer(sys.argv[2])
print("tokens:", tok.encode("Once upon a time"))
"""


def _stand_in_torch(folder: Path) -> None:
    pkg = folder / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import os\nopen(os.environ['TORCH_MARK'], 'w').write('imported')\n__version__ = '2.9.0'\n",
        encoding="utf-8",
    )
    meta = folder / "torch-2.9.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torch\nVersion: 2.9.0\n", encoding="utf-8"
    )


def _run(tmp_path: Path, argv: list[str], allow: bool = False):
    """(the process, whether the stand-in torch was imported) for ``python argv``."""
    site = tmp_path / "site"
    if not site.exists():
        _stand_in_torch(site)
    mark = tmp_path / "imported"
    mark.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "ORCHARD_ALLOW_TORCH"}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{ROOT}", TORCH_MARK=str(mark))
    if allow:
        env["ORCHARD_ALLOW_TORCH"] = "1"
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    return proc, mark.exists()


def _load(tmp_path: Path, how: str, allow: bool = False):
    return _run(tmp_path, ["-c", LOAD, how, str(MODEL)], allow)


def test_the_tokenizer_loads_without_importing_an_installed_torch(tmp_path: Path) -> None:
    # without the guard this transformers imports the stand-in (the test can fail)
    _, imported = _load(tmp_path, "plain")
    assert imported, "transformers no longer imports torch by itself: the guard may be moot"

    proc, imported = _load(tmp_path, "keep-out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kept out: True" in proc.stdout
    assert "tokens: [" in proc.stdout
    assert not imported


def test_orchard_allow_torch_lets_it_in(tmp_path: Path) -> None:
    proc, imported = _load(tmp_path, "keep-out", allow=True)
    assert "kept out: False" in proc.stdout
    assert imported


def test_the_orchard_command_tokenizes_without_torch(tmp_path: Path) -> None:
    """The CLI's own entry point calls the guard: a dataset checked with the model's
    tokenizer imports no torch."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "Once upon a time there was a cat."}\n', encoding="utf-8")
    argv = ["-m", "engine.cli.main", "inspect-data", str(data), "--model", str(MODEL)]
    proc, imported = _run(tmp_path, argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "token" in proc.stdout.lower()
    assert not imported


def test_a_tokenizer_whose_code_needs_torch_is_named_with_the_way_out(monkeypatch) -> None:
    """A remote-code tokenizer that imports torch gets one clear line, not a traceback."""
    import engine.model.load as load
    from engine.model.errors import ModelError

    def needs_torch(folder, extra):
        import torch  # noqa: F401 - what such a tokenizer's own code does

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(load, "mlx_load_tokenizer", needs_torch)
    try:
        load.load_tokenizer(str(MODEL), trust_remote_code=True)
    except ModelError as e:
        assert "ORCHARD_ALLOW_TORCH=1" in str(e) and "stories260K" in str(e)
    else:
        raise AssertionError("no ModelError")

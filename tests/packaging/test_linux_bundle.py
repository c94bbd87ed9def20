"""Build the Linux bundle with packaging/build_linux.sh and run `orchard --selftest` in it.

Slow: the build alone takes about 3 minutes of CPU (measured 2.5 min CPU, 14 min wall on a
busy 2-core machine), so it runs only when asked: ORCHARD_TEST_BUNDLE=1 builds the bundle,
ORCHARD_BUNDLE=/path/to/dist/orchard/orchard tests a bundle built already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="the Linux bundle builds on Linux"
    ),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("ORCHARD_BUNDLE")
    if given:
        return Path(given)
    if os.environ.get("ORCHARD_TEST_BUNDLE") != "1":
        pytest.skip("set ORCHARD_TEST_BUNDLE=1 to build the bundle (minutes) and test it")
    pytest.importorskip("PyInstaller", reason="needs PyInstaller (pip install pyinstaller)")
    where = tmp_path_factory.mktemp("bundle")
    env = {**os.environ, "ORCHARD_DIST": str(where / "dist"), "ORCHARD_BUILD": str(where / "w")}
    done = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build_linux.sh"), sys.executable],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, f"build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    sys.stdout.write(done.stdout.splitlines()[-1] + "\n")  # "built in N s, SIZE"
    return where / "dist" / "orchard" / "orchard"


def test_bundle_selftest(bundle: Path, tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    env.pop("PYTHONPATH", None)  # the bundle must not lean on the source tree
    done = subprocess.run(
        [str(bundle), "--selftest"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "all checks passed" in output


def test_bundle_runs_modules_like_python(bundle: Path, tmp_path: Path) -> None:
    """The engine starts local workers as [sys.executable, '-m', 'engine.worker', ...]."""
    done = subprocess.run(
        [str(bundle), "-m", "engine.worker", "--help"], cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--local" in done.stdout

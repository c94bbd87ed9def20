#!/usr/bin/env bash
# Build the Linux one-folder bundle: dist/orchard/orchard (CI smoke-tests it with --selftest).
# Usage: packaging/build_linux.sh [PYTHON]   (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-}}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
  echo "build_linux: PyInstaller is missing: $PY -m pip install 'pyinstaller>=6.10'" >&2
  exit 2
fi
DIST="${ORCHARD_DIST:-dist}"
WORK="${ORCHARD_BUILD:-build/pyinstaller}"
start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$WORK" packaging/orchard.spec
echo "build_linux: $DIST/orchard/orchard built in $(( $(date +%s) - start )) s," \
  "$(du -sh "$DIST/orchard" | cut -f1)"

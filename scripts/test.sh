#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
.venv/bin/python -m ruff check .
.venv/bin/python scripts/gen_proto.py --check
exec .venv/bin/python -m pytest -ra --durations=40 "$@"

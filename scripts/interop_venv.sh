#!/usr/bin/env bash
# Make (or check) .venv-interop/: torch + peft + transformers for the PEFT interop tests only,
# kept out of the main environment. The tests make it on first use; this makes it ahead
# (e.g. a CI step before pytest). Usage: scripts/interop_venv.sh [PYTHON]
# On Linux without a local CPU wheel, set ORCHARD_TORCH_INDEX_URL to PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${1:-.venv/bin/python}" -m tests.export.interop_venv

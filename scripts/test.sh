#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
.venv/bin/python -m ruff check .
.venv/bin/python scripts/gen_proto.py --check
# Two test processes (pytest-xdist), a file's tests kept together so its module fixtures run
# once: most slow tests wait on sockets, processes and deadlines rather than the CPU, so two
# at a time nearly halve the suite on 2 cores. ORCHARD_TEST_JOBS=0 runs it in one process.
exec .venv/bin/python -m pytest -ra --durations=40 -n "${ORCHARD_TEST_JOBS:-2}" --dist loadfile "$@"

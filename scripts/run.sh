#!/usr/bin/env bash
# Set up (first time only) and open the Orchard app. `scripts/run.sh demo` trains the demo
# headless instead (for machines with no screen); any other arguments go to `orchard`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -eq 0 ]; then
  exec .venv/bin/orchard app
fi
exec .venv/bin/orchard "$@"

#!/usr/bin/env bash
# Set up Orchard in ./.venv (idempotent). Usage: scripts/setup.sh [--dev]
# On Linux as root it also installs the few system libraries Qt, the network tests and
# the fast BLAS need; elsewhere it only says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "Orchard needs Python 3.11 or newer (python.org or 'brew install python@3.12')." >&2; exit 1; }

if [ "$(uname -s)" = "Linux" ]; then
  pkgs="libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 iproute2 libopenblas0-pthread"
  if [ "${1:-}" = "--dev" ]; then
    pkgs="$pkgs xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0"
    # the link harness (bench/netsim): iptables-legacy for NFQUEUE, and nfdelay.c's build
    pkgs="$pkgs iptables libnetfilter-queue-dev gcc libc6-dev"
  fi
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing system packages:$missing"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
      echo "note: missing system packages:$missing (install them with apt-get for Qt and the network tests)" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.orchard-installed"
want="$(cat pyproject.toml | sha256sum 2>/dev/null || shasum -a 256 pyproject.toml)${1:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "${1:-}" = "--dev" ]; then
    .venv/bin/python -m pip install -q -e ".[dev]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Installs everything qlspec needs on a fresh Debian machine with Python 3.11 and pip:
# the CPU build of torch 2.13.0 first (an unpinned torch would pull a multi-GB CUDA build), then
# qlspec itself, editable, with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

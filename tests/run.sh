#!/usr/bin/env bash
# Install ScaleDown with its test extras into .venv (CPU torch first) and run the whole test suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh -k config -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# CPU build first: an unpinned torch would pull a multi-GB CUDA build
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest tests "$@"

#!/usr/bin/env bash
# Runs the whole test suite in the pinned .venv. Extra arguments go to pytest.
# Two pytest workers (TEST_WORKERS; 0 runs in this process) that take tests as they free up:
# a TensorFlow test spends much of its time tracing and starting up on one core. The tests of
# a module fixture (a trained run) stay on one worker (tests/conftest.py): it is made once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"

#!/usr/bin/env bash
# Runs the whole test suite in the pinned .venv. Extra arguments go to pytest.
# Two pytest workers (TEST_WORKERS; 0 runs in this process) that take whole test modules as they
# free up, the slowest first (tests/conftest.py): a TensorFlow test spends much of its time
# tracing and starting up on one core, and a module's trained run is made once. xdist would
# reorder modules by their number of tests: --no-loadscope-reorder keeps conftest's order.
# (Per-test distribution with groups, --dist loadgroup, does not group under pytest 9 with
# xdist 3.8.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"

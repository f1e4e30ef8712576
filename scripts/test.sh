#!/usr/bin/env bash
# Runs the whole test suite in the pinned .venv. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"

"""`python -m launcher`: learning-rate sweeps locally or on Kubernetes; see launcher/__init__.py."""

from __future__ import annotations

import sys

from common.cli import run_main
from launcher.cli import main

if __name__ == "__main__":
    sys.exit(run_main(main))

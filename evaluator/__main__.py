"""`python -m evaluator`: see evaluator/cli.py."""

import os
import sys

# The evaluator shares nodes with trainers: it must never take GPU memory from them.
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.cli import run_main  # noqa: E402
from evaluator.cli import main  # noqa: E402

sys.exit(run_main(main))

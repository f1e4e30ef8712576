"""The bounds of the trainer's flags, owned here so that the launcher checks them too.

trainer/config.py parses these flags for a run; launcher/trainer_flags.py checks the same
flags before a sweep writes anything (the launcher may not import the trainer, nor
TensorFlow). Both take the validators below, so a value the trainer would refuse minutes
into a Job (`--image-size 100000`) is refused by the launcher at once, in the same words,
and never recorded in sweep.json.
"""

from __future__ import annotations

from common import args
from common.model import MIN_IMAGE_SIZE

# Bounds a typo cannot cross: past these a run fails only after minutes and gigabytes.
MAX_IMAGE_SIZE = 1024  # Inception-v3 was trained at 299; memory grows with the square
MAX_BATCH_SIZE = 8192  # beyond what one node's accelerators hold at the smallest image size
MAX_WORKERS = 256  # pods of one run; each holds a node's GPUs (also values.schema.json's)
# numpy's seeds are unsigned 32-bit; a larger or negative one fails after TensorFlow starts.
MAX_SEED = 2**32 - 1

image_size = args.int_between(
    MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, f"the network needs {MIN_IMAGE_SIZE}; more only costs memory"
)
batch_size = args.int_between(1, MAX_BATCH_SIZE, "a global batch for one run")
workers = args.int_between(1, MAX_WORKERS, "worker processes of one run")
seed = args.int_between(0, MAX_SEED, "numpy's seed range")
lease_seconds = args.checked(float, lambda v: 5 <= v <= 3600, "5 to 3600 seconds")

"""Several processes, one run: the strategy, the per-worker input, and the decisions they share.

Under MultiWorkerMirroredStrategy every worker runs the same steps in lockstep: each step's
gradients are summed across all of them. Anything that makes one worker leave the loop, save,
or skip a step while the others go on would leave them waiting on a collective that never
comes. So the decisions that depend on one process's view (a SIGTERM to that pod, stop.json
seen by its watcher thread, a checkpoint due by its clock) are summed across the workers at
every step (`StepSync`), and all act on the same answer at the same step. This is the
agreement that tf.distribute.experimental.PreemptionCheckpointHandler provides, kept inside our
own loop and checkpoint layout.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import tensorflow as tf

from common.cli import UserError, first_line
from trainer.workers import Cluster, WorkerLost

# A collective that waits longer than this on a peer fails, so that a worker that died
# without a word (a lost node) ends the others instead of hanging them: the Job then restarts
# the group from the last checkpoint. Generous: the first step waits for every worker to
# build and trace the model, minutes on a busy node.
COLLECTIVE_TIMEOUT_S = 600.0


# What a collective raises when a peer's process is gone (connection reset), it stopped
# answering (the timeout), or the coordination service gave up on it.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
)


def worker_lost(exc: tf.errors.OpError) -> WorkerLost:
    # TensorFlow's first line is "Graph execution error:"; the cause comes later.
    cause = re.search(r"(?:aborted by|Deadline Exceeded|timed out)[^\n]*", str(exc))
    return WorkerLost(
        f"lost another worker of this run ({cause[0] if cause else first_line(exc)}); exiting "
        "so that the group restarts from the last checkpoint"
    )


def make_strategy(cluster: Cluster) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the cluster (create before any other TensorFlow op)."""
    os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_S)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def check_batch_split(strategy: tf.distribute.Strategy, batch_size: int, workers: int) -> None:
    """The global batch must split evenly: every replica of every worker takes the same share."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(
            f"--batch-size {batch_size} does not split evenly over the {replicas} replicas of "
            f"this run ({workers} workers, {replicas // workers} replica(s) each); use a "
            f"multiple of {replicas}."
        )


def distributed_batches(
    strategy: tf.distribute.Strategy,
    global_batch: int,
    make: Callable[[int, tuple[int, int]], tf.data.Dataset],
) -> tf.distribute.DistributedDataset:
    """Each worker reads its own share of every shard (`make(per_replica_batch, (n, i))`)."""

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        return make(context.get_per_replica_batch_size(global_batch), shard)

    return strategy.distribute_datasets_from_function(per_worker)


class StepSync:
    """Per step: (stop, checkpoint) = whether any worker wants to stop or is due to save."""

    def __init__(self, strategy: tf.distribute.Strategy, several: bool) -> None:
        self.several = several

        @tf.function  # eager collectives cost far more than the few bytes they move
        def summed(wants: tf.Tensor) -> tf.Tensor:
            per_replica = strategy.run(tf.identity, args=(wants,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        self._summed = summed

    def __call__(self, stop: bool, checkpoint: bool) -> tuple[bool, bool]:
        if not self.several:
            return stop, checkpoint
        total = self._summed(tf.constant([int(stop), int(checkpoint)], tf.int32)).numpy()
        return bool(total[0]), bool(total[1])

    def barrier(self) -> None:
        """Wait for every worker here: the others wait for the chief's last writes (the export)
        rather than leave while it works, which TensorFlow's coordination service reports as
        crashed workers."""
        if not self.several:
            return
        try:
            self._summed(tf.constant([0, 0], tf.int32))
        except PEER_ERRORS as exc:  # the chief failed in its last writes
            raise worker_lost(exc) from exc

"""Everything checked before a model is built: dataset, run directory, hyperparameters, weights.

A mistake here costs the user seconds, not a model build: each one is a single sentence.
No TensorFlow is imported here (except by Keras' weight download, the last check).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from common import layout, storage
from common import manifest as manifest_lib
from common.cli import UserError
from common.records import TRAIN, VALIDATION
from trainer import run_dir, weights
from trainer.config import TrainConfig
from trainer.rungs import Rungs

log = logging.getLogger("trainer")


@dataclasses.dataclass
class Plan:
    config: TrainConfig
    manifest: manifest_lib.Manifest
    hparams: dict[str, Any]
    total_steps: int
    steps_per_epoch: float
    run_name: str
    run: layout.RunDir
    resume_step: int | None  # the latest checkpoint's step, None for a fresh run
    hparams_changed: bool  # a fresh run, or one whose hyperparameters were --force'd
    weights_path: str | None  # local backbone weights for a fresh run; None: random or resume
    already_complete: dict[str, Any] | None  # complete.json of a run with nothing left to do
    rungs: Rungs | None = None  # where it judges itself, in a sweep with a rule (trainer.rungs)


def prepare(config: TrainConfig, given: set[str]) -> Plan:
    config.data = storage.normalize(config.data)
    config.run_dir = storage.normalize(config.run_dir)
    if config.weights not in ("imagenet", "none"):
        config.weights = storage.normalize(config.weights)
    manifest = manifest_lib.load(config.data)
    if manifest.count(TRAIN) == 0 or not manifest.splits[TRAIN].shards:
        raise UserError(f"the dataset {config.data} has no training examples.")
    if manifest.num_classes < 2:
        raise UserError(f"the dataset {config.data} has one class; a classifier needs two or more.")
    _check_shards(config.data, manifest)
    manifest_lib.check_shard_sizes(config.data, manifest, [TRAIN])
    storage.check_writable_location(config.run_dir)

    state = run_dir.inspect(config.run_dir)
    changes = run_dir.reconcile(config, given, manifest, state)
    total = run_dir.total_steps(config, manifest)
    if config.head_warmup_steps and config.fine_tune == "head":
        raise UserError("--head-warmup-steps only applies with --fine-tune all.")
    hparams = run_dir.build_hparams(config, manifest, state, changes)

    complete = state.complete
    # A run stopped early (stop.json, a NaN loss) is as done as one that reached its end.
    done = (
        bool(complete)
        and not changes
        and (bool(complete.get("stopped")) or int(complete.get("final_step", -1)) >= total)
    )
    fresh = state.checkpoint_step is None
    weights_path = weights.resolve(config.weights) if fresh and not done else None
    if fresh and not done:
        hparams["weights_file"] = weights.describe(weights_path)
    elif state.hparams and "weights_file" in state.hparams:
        hparams["weights_file"] = state.hparams["weights_file"]
    rungs = None if done else Rungs.of(layout.RunDir(config.run_dir), total,
                                       manifest.count(VALIDATION) > 0)  # fmt: skip
    if rungs is not None:
        hparams["rungs"] = rungs.steps  # before step 1: the evaluator leaves these to us
    if config.batch_size > manifest.count(TRAIN) and not done:
        log.warning(
            "warning: batch size %d is larger than the %d training examples; examples repeat "
            "within each batch",
            config.batch_size,
            manifest.count(TRAIN),
        )
    return Plan(
        config=config,
        manifest=manifest,
        hparams=hparams,
        total_steps=total,
        steps_per_epoch=hparams["steps_per_epoch"],
        run_name=storage.basename(config.run_dir),
        run=layout.RunDir(config.run_dir),
        resume_step=state.checkpoint_step,
        hparams_changed=fresh or bool(changes),
        weights_path=weights_path,
        already_complete=complete if done else None,
        rungs=rungs,
    )


def _check_shards(data: str, manifest: manifest_lib.Manifest) -> None:
    """Every training shard the manifest names is there (one listing, not one call per shard)."""
    present = {storage.basename(uri) for uri in storage.list_files(data)}
    missing = [name for name in manifest.splits[TRAIN].shards if name not in present]
    if missing:
        raise UserError(
            f"the dataset {data} lacks {len(missing)} of its {len(manifest.splits[TRAIN].shards)} "
            f"training shards (first: {missing[0]}); copy it again or rerun preprocess."
        )

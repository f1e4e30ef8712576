"""What a run directory says about a run, and how a new start agrees with it.

A run directory is never deleted or emptied. Started on one that already trained (it has a
checkpoint), the trainer takes the saved hyperparameters for every flag not given, and refuses
a flag that contradicts them unless --force (then the change is recorded in hparams.json).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from common import layout, storage
from common.cli import UserError
from common.manifest import Manifest
from common.records import TRAIN
from trainer.config import DEFAULT_EPOCHS, TrainConfig, hparam_names


@dataclasses.dataclass
class RunState:
    """What is already in a run directory."""

    hparams: dict[str, Any] | None
    checkpoint_step: int | None  # step of the latest checkpoint, None if there is none
    complete: dict[str, Any] | None


def inspect(run_dir: str) -> RunState:
    run = layout.RunDir(run_dir)
    return RunState(run.hparams(), run.latest_checkpoint_step(), run.complete())


def total_steps(config: TrainConfig, manifest: Manifest) -> int:
    if config.steps is not None:
        return config.steps
    epochs = config.epochs if config.epochs is not None else DEFAULT_EPOCHS
    return max(1, math.ceil(epochs * manifest.count(TRAIN) / config.batch_size))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_saved_types(config: TrainConfig, saved: dict[str, Any]) -> None:
    """Every saved hyperparameter has its flag's type (a float may be saved as an int), so a
    hand-edited hparams.json is one sentence here, not a failure after TensorFlow starts."""
    for name in hparam_names():
        value, default = saved.get(name), getattr(TrainConfig(), name)
        if value is None or default is None:
            continue  # steps or epochs unset; layout checks their types
        kinds = (int, float) if isinstance(default, float) else (type(default),)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kinds):
            raise UserError(
                f"{layout.RunDir(config.run_dir).hparams_uri} saves {name} as {value!r}, which "
                f"is not a {type(default).__name__}; fix the file or use another --run-dir."
            )


def reconcile(
    config: TrainConfig, given: set[str], manifest: Manifest, state: RunState
) -> list[dict[str, Any]]:
    """Fill config from a run that already trained; raise on a contradiction unless --force.

    Returns the changes forced on the saved hyperparameters (empty without --force).
    """
    saved = state.hparams
    if saved is None:
        if state.checkpoint_step is not None and not config.force:
            raise UserError(
                f"{config.run_dir} holds checkpoints but no {layout.HPARAMS}, so the run's "
                "hyperparameters are unknown; pass --force to resume it with these flags."
            )
        return []
    _check_saved_types(config, saved)
    saved_labels = saved.get("labels") or []
    # Renamed classes may be forced; a different number of them can never fit the model.
    if saved_labels != manifest.labels and (
        len(saved_labels) != manifest.num_classes or not config.force
    ):
        raise UserError(
            f"the classes of {config.data} ({', '.join(manifest.labels)}) differ from "
            f"those the run in {config.run_dir} was trained on ({', '.join(saved_labels)}); "
            "use another --run-dir."
        )
    conflicts: dict[str, tuple[Any, Any]] = {}
    for name in hparam_names():
        if name in ("steps", "epochs"):
            continue
        value = storage.normalize(config.data) if name == "data" else getattr(config, name)
        if name not in given:
            if name in saved:
                setattr(config, name, saved[name])
        elif name in saved and not _same(saved[name], value):
            conflicts[name] = (saved[name], value)
    if given & {"steps", "epochs"}:
        wanted = total_steps(config, manifest)
        if saved.get("steps") != wanted:
            conflicts["steps"] = (saved.get("steps"), wanted)
    else:
        config.steps, config.epochs = saved.get("steps"), saved.get("epochs")

    if state.checkpoint_step is None:
        return []  # nothing trained yet: the flags given now simply replace the saved ones
    if conflicts and not config.force:
        said = "; ".join(
            f"{_flag(name)} {new} (saved: {old})" for name, (old, new) in conflicts.items()
        )
        raise UserError(
            f"{said} contradicts the run in {config.run_dir}, which trained to step "
            f"{state.checkpoint_step}; drop the flag to resume as saved, pass --force to "
            "change it, or use another --run-dir."
        )
    if not conflicts:
        return []
    return [
        {
            "at": layout.now(),
            "from_step": state.checkpoint_step,
            "changed": {name: {"old": old, "new": new} for name, (old, new) in conflicts.items()},
        }
    ]


def build_hparams(
    config: TrainConfig,
    manifest: Manifest,
    state: RunState,
    changes: list[dict[str, Any]],
) -> dict[str, Any]:
    """hparams.json: every hyperparameter plus what rebuilds the model and sizes the run."""
    steps = total_steps(config, manifest)
    train_count = manifest.count(TRAIN)
    hparams: dict[str, Any] = {name: getattr(config, name) for name in hparam_names()}
    hparams.update(
        {
            "format": layout.RUN_FORMAT,
            "data": storage.normalize(config.data),
            "dataset": manifest.name,
            "num_classes": manifest.num_classes,
            "labels": manifest.labels,
            "label_offset": manifest.label_offset,
            "train_examples": train_count,
            "steps": steps,
            "steps_per_epoch": train_count / config.batch_size,
            "created": (state.hparams or {}).get("created") or layout.now(),
        }
    )
    previous = (state.hparams or {}).get("changes", []) if state.checkpoint_step is not None else []
    hparams["changes"] = previous + changes
    return hparams

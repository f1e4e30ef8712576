"""Finding runs and their checkpoints in a bucket, without TensorFlow.

The trainer's contract (see trainer/__init__.py): a run dir holds hparams.json,
checkpoints/ckpt-<step>.index (+ data files), and complete.json once training finished.
"""

from __future__ import annotations

import dataclasses
import re

from common import storage

_CKPT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
HPARAMS = "hparams.json"
COMPLETE = "complete.json"
SWEEP = "sweep.json"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    step: int
    prefix: str  # what tf.train.Checkpoint.read() takes: .../checkpoints/ckpt-<step>


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    uri: str

    @property
    def eval_dir(self) -> str:
        return storage.join(self.uri, "eval")

    def hparams(self) -> dict:
        return storage.read_json(storage.join(self.uri, HPARAMS))

    def is_complete(self) -> bool:
        return storage.exists(storage.join(self.uri, COMPLETE))

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints whose index file exists (TF writes it last), oldest first."""
        found = []
        for uri in storage.list_files(storage.join(self.uri, "checkpoints")):
            match = _CKPT_INDEX.match(storage.basename(uri))
            if match:
                step = int(match.group(1))
                found.append(Checkpoint(step, uri[: -len(".index")]))
        return sorted(found, key=lambda c: c.step)


def run_at(uri: str) -> Run:
    uri = storage.normalize(uri)
    return Run(storage.basename(uri), uri)


def discover_runs(sweep_uri: str) -> list[Run]:
    """Runs of a sweep: every runs/<name>/ that has its hparams.json (written before step 1)."""
    runs = []
    for run_uri in storage.list_dirs(storage.join(sweep_uri, "runs")):
        if storage.exists(storage.join(run_uri, HPARAMS)):
            runs.append(Run(storage.basename(run_uri), run_uri))
    return runs


def expected_run_names(sweep_uri: str) -> set[str]:
    """The runs sweep.json says were launched (empty when there is no sweep.json)."""
    try:
        sweep = storage.read_json(storage.join(sweep_uri, SWEEP))
    except FileNotFoundError:
        return set()
    names = set()
    for candidate in sweep.get("candidates", []):
        name = candidate.get("run") or candidate.get("name")
        if name:
            names.add(str(name))
    return names

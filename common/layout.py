"""Run and sweep directories: the one place their file names and small JSON files are spelled.

The trainer writes a run, the evaluator and the launcher read it; the launcher writes a sweep,
the evaluator reads it. All three go through this module, so a name changes in one place.

    <sweep>/sweep.json              what was launched (written first by the launcher)
    <sweep>/runs/<run>/             one per candidate, named by run_name_for_lr (lr-0.01)
        hparams.json  checkpoints/  train/  eval/  export/  complete.json  stop.json
        trainer.lease.json          the one trainer allowed to write this run
    <sweep>/leaderboard.json        the evaluator's ranking
    <sweep>/best/<version>/         exports of the best checkpoint so far
    <sweep>/evaluator.lease.json    the one evaluator allowed to write this sweep
    <sweep>/logs/                   a local sweep's process logs (the launcher's local backend)
    <sweep>/lr-find/                `launcher tune`'s range test (lr_find.json, common.lr_range)
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import re
from typing import Any

from common import storage
from common.cli import UserError

RUN_FORMAT = "inception-finetune-run/1"
SWEEP_FORMAT = "inception-finetune-sweep/1"

# A run directory.
HPARAMS = "hparams.json"
COMPLETE = "complete.json"
STOP = "stop.json"
TRAINER_LEASE = "trainer.lease.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAME = "ckpt"  # tf.train.CheckpointManager's checkpoint_name: ckpt-<step>
CHECKPOINT_STATE = "checkpoint"  # the CheckpointManager's state file
EXPORT = "export"
TRAIN_EVENTS = "train"
EVAL = "eval"

# A sweep directory.
SWEEP = "sweep.json"
RUNS = "runs"
LEADERBOARD = "leaderboard.json"
BEST = "best"
EVALUATOR_LEASE = "evaluator.lease.json"
LOGS = "logs"
LR_FIND_DIR = "lr-find"

log = logging.getLogger(__name__)

# A run or sweep name read from the bucket becomes a path segment (runs/<run>/, the local
# backend's logs/<run>.log) and an object name: one segment of safe characters, never "." or
# "..", so that a shared bucket (input, not trust) cannot point a write elsewhere.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")

_CKPT_INDEX = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)\.index$")
_STATE_LATEST = re.compile(rf'^model_checkpoint_path: "(?:.*/)?{CHECKPOINT_NAME}-(\d+)"', re.M)


def now() -> str:
    """UTC time as written into every file here."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def is_name(name: Any) -> bool:
    """Whether `name` may be a run or sweep directory's name (see _NAME)."""
    return isinstance(name, str) and bool(_NAME.match(name))


def check_name(name: Any, what: str) -> str:
    """The name itself when it is one safe path segment; else one sentence (`what` says whose
    name it is and where it was read)."""
    if not is_name(name):
        raise UserError(
            f"{what} {name!r} is not a valid name (1 to 100 letters, digits, '.', '_', '+' or "
            "'-', starting with a letter or digit); refusing to use it as a path."
        )
    return name


def run_name_for_lr(lr: float) -> str:
    """`lr-0.01`, `lr-1e-05`: the shortest spelling that reads back as the same float."""
    return f"lr-{lr!r}" if float(f"{lr:g}") != lr else f"lr-{lr:g}"


# The JSON types of the fields that readers of each file use; a field that is absent or null
# passes (older files lack some), one of another type is one sentence naming the file, not a
# traceback in whichever reader meets it first (status, refine, the trainer on resume).
_NUMBER = (int, float)
HPARAMS_FIELDS: dict[str, tuple[type, ...]] = {
    "lr": _NUMBER, "steps": (int,), "epochs": _NUMBER, "batch_size": (int,),
    "image_size": (int,), "num_classes": (int,), "labels": (list,), "seed": (int,),
    "data": (str,), "created": (str,), "changes": (list,),
}  # fmt: skip
COMPLETE_FIELDS: dict[str, tuple[type, ...]] = {
    "final_step": (int,), "finished": (str,), "stopped": (dict,),
}  # fmt: skip
STOP_FIELDS: dict[str, tuple[type, ...]] = {"step": (int,), "rule": (str,), "reason": (str,)}
LEADERBOARD_FIELDS: dict[str, tuple[type, ...]] = {
    "runs": (list,), "best": (dict,), "broken": (list,), "stopped": (list,), "lag": (dict,),
}  # fmt: skip
LEADERBOARD_ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "run": (str,), "rank": (int,), "best_top1": _NUMBER, "best_top5": _NUMBER,
    "best_loss": _NUMBER, "best_step": (int,), "last_step": (int,), "hparams": (dict,),
    "stopped": (dict,),
}  # fmt: skip


_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a whole number"}


def _type_name(value: Any) -> str:
    """What JSON calls the type of a parsed value, for sentences."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, _NUMBER):
        return "a number"
    return _KIND_NAMES.get(type(value), "null")


def _kinds_name(kinds: tuple[type, ...]) -> str:
    return "a number" if kinds == _NUMBER else " or ".join(_KIND_NAMES[k] for k in kinds)


def _has_type(value: Any, kinds: tuple[type, ...]) -> bool:
    """JSON's types: true/false is not a number here, though Python's bool is an int."""
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def shape_problem(data: Any, fields: dict[str, tuple[type, ...]]) -> str | None:
    """Why `data` is not a JSON object with these field types, or None when it is."""
    if not isinstance(data, dict):
        return f"its top level is {_type_name(data)}, not an object"
    for key, kinds in fields.items():
        value = data.get(key)
        if value is not None and not _has_type(value, kinds):
            return f"{key!r} is {_type_name(value)}, not {_kinds_name(kinds)}"
    return None


def read_object(uri: str, what: str, fields: dict[str, tuple[type, ...]]) -> dict[str, Any] | None:
    """A small JSON object file, None when absent; unreadable or wrong-shaped JSON is one
    sentence naming the file."""
    data = read_json_or_none(uri, what)
    if data is None:
        return None
    problem = shape_problem(data, fields)
    if problem:
        raise UserError(f"{uri} ({what}) is not what this product writes: {problem}; fix or "
                        "move it away.")  # fmt: skip
    return data


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    step: int
    prefix: str  # what tf.train.Checkpoint.read() takes: .../checkpoints/ckpt-<step>


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (local or gs://)."""

    uri: str

    @classmethod
    def at(cls, uri: str) -> RunDir:
        return cls(storage.normalize(uri))

    @property
    def name(self) -> str:
        return storage.basename(self.uri)

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    hparams_uri = property(lambda self: self.path(HPARAMS))
    complete_uri = property(lambda self: self.path(COMPLETE))
    stop_uri = property(lambda self: self.path(STOP))
    lease_uri = property(lambda self: self.path(TRAINER_LEASE))
    checkpoints_dir = property(lambda self: self.path(CHECKPOINTS))
    export_dir = property(lambda self: self.path(EXPORT))
    train_dir = property(lambda self: self.path(TRAIN_EVENTS))
    eval_dir = property(lambda self: self.path(EVAL))

    def has_hparams(self) -> bool:
        return storage.exists(self.hparams_uri)

    def sweep(self) -> SweepDir | None:
        """The sweep this run dir sits in (<sweep>/runs/<run>), None for a lone run dir."""
        parent = self.uri.rstrip("/").rsplit("/", 1)[0]
        if storage.basename(parent) != RUNS or parent.count("/") < 1:
            return None
        return SweepDir(parent.rsplit("/", 1)[0])

    def hparams(self) -> dict[str, Any] | None:
        return read_object(self.hparams_uri, "hyperparameters", HPARAMS_FIELDS)

    def complete(self) -> dict[str, Any] | None:
        return read_object(self.complete_uri, "completion record", COMPLETE_FIELDS)

    def stop_request(self) -> dict[str, Any] | None:
        return read_object(self.stop_uri, "stop request", STOP_FIELDS)

    def is_complete(self) -> bool:
        return storage.exists(self.complete_uri)

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints whose index file exists (TensorFlow writes it last), oldest first."""
        found = []
        for uri in storage.list_files(self.checkpoints_dir):
            match = _CKPT_INDEX.match(storage.basename(uri))
            if match:
                found.append(Checkpoint(int(match.group(1)), uri[: -len(".index")]))
        return sorted(found, key=lambda c: c.step)

    def latest_checkpoint_step(self) -> int | None:
        """The step of the newest checkpoint named in the CheckpointManager's state file."""
        try:
            text = storage.read_text(self.path(CHECKPOINTS, CHECKPOINT_STATE))
        except FileNotFoundError:
            return None
        match = _STATE_LATEST.search(text)
        return int(match.group(1)) if match else None

    def save_hparams(self, hparams: dict[str, Any]) -> None:
        storage.write_json(self.hparams_uri, hparams)

    def save_complete(self, info: dict[str, Any]) -> None:
        storage.write_json(self.complete_uri, info)

    def save_stop_request(self, request: dict[str, Any]) -> bool:
        """Write stop.json unless one is there already (a run is stopped once); True if written."""
        try:
            storage.write_json(self.stop_uri, request, if_absent=True)
        except FileExistsError:
            return False
        return True


def read_json_or_none(uri: str, what: str) -> Any:
    """A small JSON file, None when absent; unreadable JSON is one sentence naming the file."""
    try:
        return storage.read_json(uri)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{uri} ({what}) is not valid JSON ({exc}); fix or move it away.") from exc


@dataclasses.dataclass
class Candidate:
    """One run of a sweep: its directory name under runs/ and its learning rate."""

    run: str
    lr: float


EARLY_STOP_RULES = ("none", "median", "asha")


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """sweep.json's early-stopping rule: which one, and its parameters (common.early_stop).

    grace: no run is stopped before this step, and asha's first rung is there; None: a tenth
    of the runs' steps. eta: asha keeps the top 1/eta at each rung, the next rung is eta times
    further. patience: a run whose best result is this many steps older than its latest is
    stopped too, the best run included (its best checkpoint stays); None or 0: never.
    """

    rule: str = "none"
    grace: int | None = None
    eta: int = 3
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.rule not in EARLY_STOP_RULES:
            raise ValueError(f"rule {self.rule!r} is not one of {', '.join(EARLY_STOP_RULES)}")
        checks = (("grace", self.grace, 1), ("eta", self.eta, 2), ("patience", self.patience, 0))
        for name, value, least in checks:
            if value is None and name in ("grace", "patience"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, not {value!r}")

    @classmethod
    def from_dict(cls, data: Any) -> EarlyStop:
        """From sweep.json; sweeps written before early stopping existed have no entry."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"early_stop must be an object, not {data!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in fields})
        except ValueError as exc:
            raise ValueError(f"early_stop: {exc}") from None

    def describe(self) -> str:
        """`asha (grace 100 steps, eta 3)`, `none`: for sentences and logs."""
        if self.rule == "none":
            return "none"
        grace = "a tenth of the steps" if self.grace is None else f"{self.grace} steps"
        eta = f", eta {self.eta}" if self.rule == "asha" else ""
        patience = f", patience {self.patience} steps" if self.patience else ""
        return f"{self.rule} (grace {grace}{eta}{patience})"


@dataclasses.dataclass
class Stage:
    """One stage of `launcher tune` (lr-find, coarse, refine-1, ...): what it ran and why.

    runs: the candidates it added. best: the sweep's best run once the stage ended ({"run",
    "lr", "top1"}), None while it runs. ended: why tuning stopped after it, if it did.
    """

    name: str
    why: str
    lrs: list[float] = dataclasses.field(default_factory=list)
    runs: list[str] = dataclasses.field(default_factory=list)
    started: str = ""
    finished: str = ""
    best: dict[str, Any] | None = None
    ended: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> Stage:
        problem = shape_problem(data, _STAGE_FIELDS)
        if problem or not isinstance(data.get("name"), str):
            raise ValueError(f"a stage: {problem or 'it has no name'}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields and v is not None})


_STAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "why": (str,), "lrs": (list,), "runs": (list,), "started": (str,),
    "finished": (str,), "best": (dict,), "ended": (str,),
}  # fmt: skip


@dataclasses.dataclass
class Sweep:
    """sweep.json: what was launched, written before any run starts.

    The evaluator waits for every candidate named here; a refine appends candidates.
    """

    name: str
    data: str
    candidates: list[Candidate]
    trainer_args: list[str] = dataclasses.field(default_factory=list)  # shared trainer flags
    early_stop: EarlyStop = dataclasses.field(default_factory=EarlyStop)
    created: str = ""
    format: str = SWEEP_FORMAT
    stages: list[Stage] = dataclasses.field(default_factory=list)  # `launcher tune`'s

    def run_names(self) -> list[str]:
        return [c.run for c in self.candidates]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = SWEEP) -> Sweep:
        """From sweep.json, every field checked: its names become paths and object names
        (runs/<run>/, logs/<run>.log), its trainer_args a command line."""
        try:
            problem = shape_problem(data, _SWEEP_FIELDS)
            if problem:
                raise ValueError(problem)
            candidates = [_candidate(c) for c in data.get("candidates") or []]
            for name in ("name", "data"):
                if not isinstance(data.get(name), str):
                    raise ValueError(f"{name!r} must be a string")
            check_name(data["name"], "sweep name")
            if not all(isinstance(a, str) for a in data.get("trainer_args") or []):
                raise ValueError("'trainer_args' must be a list of strings")
            fields = {f.name for f in dataclasses.fields(cls)}
            rest = {k: v for k, v in data.items() if k in fields and k != "candidates"}
            rest["early_stop"] = EarlyStop.from_dict(data.get("early_stop"))
            rest["stages"] = [Stage.from_dict(stage) for stage in data.get("stages") or []]
            return cls(candidates=candidates, **rest)
        except (KeyError, TypeError, ValueError, AttributeError, UserError) as exc:
            raise UserError(f"{where} is not a valid sweep description ({exc}).") from None


_SWEEP_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "data": (str,), "candidates": (list,), "trainer_args": (list,),
    "early_stop": (dict,), "created": (str,), "format": (str,), "stages": (list,),
}  # fmt: skip


def _candidate(item: Any) -> Candidate:
    """One of sweep.json's candidates: a valid run name and a finite learning rate above 0."""
    if not isinstance(item, dict):
        raise ValueError(f"a candidate is {_type_name(item)}, not an object")
    run, lr = check_name(item.get("run"), "run name"), item.get("lr")
    if not _has_type(lr, _NUMBER) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"run {run}'s lr {lr!r} is not a finite number above 0")
    return Candidate(run, float(lr))


@dataclasses.dataclass(frozen=True)
class SweepDir:
    """The paths of one sweep directory (local or gs://)."""

    uri: str

    @classmethod
    def at(cls, uri: str) -> SweepDir:
        return cls(storage.normalize(uri))

    @property
    def name(self) -> str:
        return storage.basename(self.uri)

    sweep_uri = property(lambda self: storage.join(self.uri, SWEEP))
    runs_dir = property(lambda self: storage.join(self.uri, RUNS))
    leaderboard_uri = property(lambda self: storage.join(self.uri, LEADERBOARD))
    best_dir = property(lambda self: storage.join(self.uri, BEST))
    lease_uri = property(lambda self: storage.join(self.uri, EVALUATOR_LEASE))

    def run(self, name: str) -> RunDir:
        """runs/<name>/; a name that is not one safe path segment is one sentence."""
        return RunDir(storage.join(self.runs_dir, check_name(name, "run name")))

    def runs(self) -> list[RunDir]:
        """Every runs/<name>/ that has its hparams.json (written before step 1); a folder whose
        name no run of ours has (an object name with `..`, a space) is left out."""
        runs = []
        for uri in storage.list_dirs(self.runs_dir):
            if is_name(storage.basename(uri)):
                runs.append(RunDir(uri))
            else:
                log.warning("%s: not a run name; left out", uri)
        return [run for run in runs if run.has_hparams()]

    def load(self) -> Sweep | None:
        data = read_json_or_none(self.sweep_uri, "sweep description")
        return None if data is None else Sweep.from_dict(data, where=self.sweep_uri)

    def save(self, sweep: Sweep) -> None:
        storage.write_json(self.sweep_uri, sweep.to_dict())

    def leaderboard(self) -> dict[str, Any] | None:
        """leaderboard.json, its rows checked (each a valid run name with numbers for scores)."""
        board = read_object(self.leaderboard_uri, "leaderboard", LEADERBOARD_FIELDS)
        for row in (board or {}).get("runs") or []:
            problem = shape_problem(row, LEADERBOARD_ROW_FIELDS)
            if problem is None and not is_name(row.get("run")):
                problem = f"a row's run {row.get('run')!r} is not a valid name"
            if problem:
                raise UserError(
                    f"{self.leaderboard_uri} (leaderboard) is not what the evaluator writes: "
                    f"in its runs, {problem}; fix or move it away."
                )
        return board

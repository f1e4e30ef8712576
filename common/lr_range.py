"""The learning-rate range test: its file, `lr_find.json`, and its maths. No TensorFlow here.

`python -m trainer lr-find` runs the test and writes `<run-dir>/lr_find.json`; the launcher,
which never imports TensorFlow, reads it to seed a sweep. Both go through this module, so the
file's name and shape, and the functions that turn a loss curve into a suggestion, exist once.

The test is fastai's `lr_find` (Leslie Smith's range test): train from the run's own starting
point (the same weights, the head fitted first) with the learning rate rising geometrically
from `start_lr` to `end_lr` over `num_steps` steps; record each step's own loss (not a running
average), smooth it with an exponential moving average (beta 0.98) corrected for its start at
0, and stop once the smoothed loss passes `diverge` times its lowest value so far, or is not a
number. The weights are thrown away: the test only answers "which lr?".

Suggestions are read from the smoothed curve without its first tenth of `num_steps` (the
average is still warming up there) and its last SKIP_END points (the divergence itself), as
fastai reads them:

- `valley` (the default, fastai's): the middle of the longest falling stretch of the curve,
  taken as its longest strictly decreasing subsequence, so that one noisy step up does not cut
  a stretch in two. Low enough to be safe, high enough to learn fast.
- `steep`: the lr where the loss falls fastest per unit of log lr.
- `minimum`: the lr of the lowest loss, divided by 10 (the minimum itself is already close to
  where training falls apart).

Two deliberate differences from fastai: the last step's lr is `end_lr` itself (fastai stops one
factor short of it), and the valley's stretch starts at its real first point (fastai's index
is one before it, -1 for a stretch that starts at the first point, which picked the last lr).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from common import layout, storage
from common.cli import UserError

FILE = "lr_find.json"  # written last: its presence means the test finished
PLOT = "lr_find.png"  # the smoothed loss against the lr, suggestions marked
EVENTS = "lr_find"  # TensorBoard events of the test, beside the run's train/ and eval/
FORMAT = "inception-finetune-lr-find/1"

# fastai's defaults.
START_LR = 1e-7
END_LR = 10.0
NUM_STEPS = 100
DIVERGE = 4.0
BETA = 0.98
SKIP_END = 5  # points left out at the end of the curve before suggesting
MIN_POINTS = 3  # a suggestion from fewer points than this is a guess, not a reading

VALLEY, STEEP, MINIMUM = "valley", "steep", "minimum"
SUGGESTION_METHODS = (VALLEY, STEEP, MINIMUM)
# How each suggestion reads in sentences: "minimum" is a tenth of the minimum's lr.
SUGGESTION_LABELS = {VALLEY: "valley", STEEP: "steep", MINIMUM: "minimum/10"}

# Why the test stopped.
DIVERGED = "diverged"  # the smoothed loss passed `diverge` times its minimum
NOT_FINITE = "not_finite"  # the loss was NaN or infinite
END = "end"  # every step ran (the lr reached end_lr) without either
STOP_REASONS = (DIVERGED, NOT_FINITE, END)


# ---------------------------------------------------------------- the maths


def lr_at(index: int, start_lr: float, end_lr: float, num_steps: int) -> float:
    """The lr of step `index` (0-based): start_lr at 0, end_lr at num_steps - 1, a constant
    factor between neighbours."""
    if num_steps < 2:
        return start_lr
    return start_lr * (end_lr / start_lr) ** (index / (num_steps - 1))


def geometric_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """Every step's lr, from start_lr to end_lr."""
    return [lr_at(i, start_lr, end_lr, num_steps) for i in range(num_steps)]


class Smoother:
    """fastai's smoothed loss: an exponential moving average started at 0, divided by
    1 - beta**n so that early values are not pulled towards that 0 (the first value is the
    first loss itself). A NaN or infinite loss makes every later value NaN or infinite."""

    def __init__(self, beta: float = BETA) -> None:
        self.beta = beta
        self.average = 0.0
        self.count = 0

    def add(self, loss: float) -> float:
        self.count += 1
        self.average = self.beta * self.average + (1.0 - self.beta) * loss
        return self.average / (1.0 - self.beta**self.count)


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """The smoothed curve of a list of losses (see Smoother)."""
    smoother = Smoother(beta)
    return [smoother.add(loss) for loss in losses]


def stop_reason(smoothed: float, best: float, diverge: float) -> str | None:
    """Why the test must stop at this smoothed loss, given the lowest one so far (this one
    included), or None to go on. A loss is never negative here (cross-entropy)."""
    if not math.isfinite(smoothed):
        return NOT_FINITE
    if smoothed > diverge * best:
        return DIVERGED
    return None


class Suggestion(NamedTuple):
    lr: float  # the suggested learning rate
    index: int  # the point of the curve it was read from (for minimum, lr is its lr / 10)


def valley(lrs: list[float], losses: list[float]) -> Suggestion:
    """The middle of the longest falling stretch: the longest strictly decreasing subsequence
    (the first such, ending earliest), and the point halfway between its first and last."""
    n = len(losses)
    if n == 0:
        raise ValueError("no points to suggest from")
    length = [1] * n  # the longest decreasing subsequence that ends at i
    first = list(range(n))  # where that subsequence starts
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 > length[i]:
                length[i], first[i] = length[j] + 1, first[j]
    end = max(range(n), key=lambda i: (length[i], -i))
    index = first[end] + (end - first[end]) // 2
    return Suggestion(float(lrs[index]), index)


def steep(lrs: list[float], losses: list[float]) -> Suggestion:
    """The lr at the start of the segment where the loss falls fastest against log lr."""
    if len(losses) < 2:
        raise ValueError("the steepest descent needs two points")
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
        for i in range(len(losses) - 1)
    ]
    index = min(range(len(slopes)), key=lambda i: (slopes[i], i))
    return Suggestion(float(lrs[index]), index)


def minimum(lrs: list[float], losses: list[float]) -> Suggestion:
    """A tenth of the lr with the lowest loss (the first, if several are equal)."""
    if not losses:
        raise ValueError("no points to suggest from")
    index = min(range(len(losses)), key=lambda i: (losses[i], i))
    return Suggestion(float(lrs[index]) / 10.0, index)


SUGGESTERS: dict[str, Callable[[list[float], list[float]], Suggestion]] = {
    VALLEY: valley,
    STEEP: steep,
    MINIMUM: minimum,
}


def window(num_points: int, num_steps: int) -> tuple[int, int]:
    """[lo, hi): the points suggestions are read from (fastai's: without the first tenth of
    num_steps, where the average warms up, and the last SKIP_END, the divergence itself)."""
    return num_steps // 10, max(num_steps // 10, num_points - SKIP_END)


def steps_needed(num_steps: int) -> int:
    """How many steps must run before the window holds MIN_POINTS points."""
    return num_steps // 10 + MIN_POINTS + SKIP_END


def suggest(lrs: list[float], smoothed: list[float], num_steps: int) -> dict[str, Suggestion]:
    """Every method's suggestion from the smoothed curve, indices into the whole curve; {}
    when the window (cut at the first loss that is not a number) holds fewer than MIN_POINTS
    points: too short a curve to read anything from."""
    lo, hi = window(len(smoothed), num_steps)
    for i in range(lo, hi):
        if not math.isfinite(smoothed[i]):
            hi = i
            break
    if hi - lo < MIN_POINTS:
        return {}
    part_lrs, part = list(lrs[lo:hi]), list(smoothed[lo:hi])
    found = {}
    for name, suggester in SUGGESTERS.items():
        lr, index = suggester(part_lrs, part)
        found[name] = Suggestion(lr, index + lo)
    return found


# ---------------------------------------------------------------- a test as it runs


@dataclasses.dataclass(frozen=True)
class Settings:
    """The range test's own parameters (the training flags are recorded beside them)."""

    start_lr: float = START_LR
    end_lr: float = END_LR
    num_steps: int = NUM_STEPS
    diverge: float = DIVERGE
    beta: float = BETA


@dataclasses.dataclass
class Point:
    step: int  # 1-based, as TensorBoard shows it
    lr: float
    loss: float | None  # this step's own loss; None when it was not a number
    smoothed: float | None


@dataclasses.dataclass
class Stopped:
    reason: str  # one of STOP_REASONS
    step: int  # the last step that ran
    lr: float  # its lr
    why: str  # a sentence for people


class Recorder:
    """Drives one test: the lr of each step, then its loss in; says when to stop.

    Kept apart from TensorFlow so that the whole procedure (lr, smoothing, stop test) is the
    same here, in the trainer and in the tests.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.points: list[Point] = []
        self.stopped: Stopped | None = None
        self._smoother = Smoother(settings.beta)
        self._best = math.inf

    def next_lr(self) -> float:
        s = self.settings
        return lr_at(len(self.points), s.start_lr, s.end_lr, s.num_steps)

    @property
    def done(self) -> bool:
        return self.stopped is not None

    def add(self, loss: float) -> Point:
        """Record the loss of the step that ran at next_lr(); sets `stopped` when it is the
        last one (the test diverged, the loss is not a number, or every step ran)."""
        if self.done:
            raise RuntimeError("the range test has already stopped")
        s = self.settings
        lr = self.next_lr()
        smoothed = self._smoother.add(loss)
        point = Point(len(self.points) + 1, lr, _finite_or_none(loss), _finite_or_none(smoothed))
        self.points.append(point)
        if math.isfinite(smoothed):
            self._best = min(self._best, smoothed)
        reason = stop_reason(smoothed, self._best, s.diverge)
        if reason == NOT_FINITE:
            why = f"the loss was {loss:g} at step {point.step} (lr {lr:.3g}), not a number"
        elif reason == DIVERGED:
            why = (
                f"the smoothed loss {smoothed:.3g} passed {s.diverge:g}x its minimum "
                f"{self._best:.3g} at step {point.step} (lr {lr:.3g})"
            )
        elif point.step >= s.num_steps:
            reason = END
            why = f"the lr reached {s.end_lr:g} after {point.step} steps without diverging"
        else:
            return point
        self.stopped = Stopped(reason, point.step, lr, why)
        return point


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: a loss that is not a number is written as null."""
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------- the file


@dataclasses.dataclass
class LrFind:
    """lr_find.json: what was tested, the curve, why it stopped and what it suggests.

    `suggestions` maps a method (SUGGESTION_METHODS) to its lr and the step of the curve it
    was read from; it is empty when the curve was too short to read. `suggested` names the one
    a sweep should use; the file also carries its lr as a top-level `lr` for readers in a hurry.
    """

    data: str
    settings: Settings
    trainer_flags: dict[str, Any]  # the training flags that shape the curve, as resolved
    curve: list[Point]
    stopped: Stopped
    suggestions: dict[str, Suggestion]  # Suggestion.index is the curve's 0-based index
    suggested: str = VALLEY
    seconds: float = 0.0  # the whole command: model, head fit, steps, writing
    steps_seconds: float = 0.0  # the steps alone (the first one traces the step function)
    created: str = ""
    format: str = FORMAT

    @property
    def lr(self) -> float | None:
        """The suggested learning rate, None when there is no suggestion."""
        found = self.suggestions.get(self.suggested)
        return found.lr if found is not None else None

    @property
    def lrs(self) -> list[float]:
        return [p.lr for p in self.curve]

    @property
    def smoothed(self) -> list[float | None]:
        return [p.smoothed for p in self.curve]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created": self.created,
            "data": self.data,
            "lr": self.lr,
            "suggested": self.suggested,
            "suggestions": {
                name: {"lr": s.lr, "step": self.curve[s.index].step}
                for name, s in self.suggestions.items()
            },
            "stopped": dataclasses.asdict(self.stopped),
            "settings": dataclasses.asdict(self.settings),
            "trainer_flags": self.trainer_flags,
            "seconds": self.seconds,
            "steps_seconds": self.steps_seconds,
            "curve": [dataclasses.asdict(p) for p in self.curve],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = FILE) -> LrFind:
        """From lr_find.json, every field the launcher uses checked: a file of another shape
        is one sentence naming it, never a traceback in whoever reads it first."""
        try:
            return _from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{where} (learning-rate range test) is not what this product writes: "
                f"{_reason(exc)}; run `python -m trainer lr-find` again or move it away."
            ) from None

    def save(self, run_dir: str) -> None:
        """Write run-dir/lr_find.json whole or not at all (local or gs://)."""
        storage.write_json(uri(run_dir), self.to_dict())

    @classmethod
    def load(cls, run_dir: str) -> LrFind:
        """run-dir/lr_find.json; a missing, unreadable or wrong-shaped file is one sentence."""
        where = uri(run_dir)
        data = layout.read_object(where, "learning-rate range test", _FIELDS)
        if data is None:
            raise UserError(
                f"{where} does not exist: run `python -m trainer lr-find --data URI --run-dir "
                f"{run_dir}` first (it is written when the range test ends)."
            )
        return cls.from_dict(data, where)


def uri(run_dir: str) -> str:
    """Where a run dir's lr_find.json is."""
    return storage.join(run_dir, FILE)


_NUMBER = (int, float)
_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,), "created": (str,), "data": (str,), "lr": _NUMBER, "suggested": (str,),
    "suggestions": (dict,), "stopped": (dict,), "settings": (dict,), "trainer_flags": (dict,),
    "seconds": _NUMBER, "steps_seconds": _NUMBER, "curve": (list,),
}  # fmt: skip
_STOPPED_FIELDS: dict[str, tuple[type, ...]] = {
    "reason": (str,), "step": (int,), "lr": _NUMBER, "why": (str,),
}  # fmt: skip
_POINT_FIELDS: dict[str, tuple[type, ...]] = {
    "step": (int,), "lr": _NUMBER, "loss": _NUMBER, "smoothed": _NUMBER,
}  # fmt: skip


def _reason(exc: BaseException) -> str:
    """A KeyError's text is the bare key in quotes: say that it is missing."""
    if isinstance(exc, KeyError):
        return f"{exc} is missing"
    return str(exc)


def _shape(data: Any, fields: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    problem = layout.shape_problem(data, fields)
    if problem:
        raise ValueError(f"{what}: {problem}")
    return data


def _positive(value: Any, what: str) -> float:
    """A finite number above 0 (true/false is not one)."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise ValueError(f"{what} is {value!r}, not a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} is {value!r}, not a finite number above 0")
    return float(value)


def _from_dict(data: Any) -> LrFind:
    _shape(data, _FIELDS, "the file")
    if not str(data.get("format", "")).startswith(FORMAT.rsplit("/", 1)[0] + "/"):
        raise ValueError(f"its format is {data.get('format')!r}, not {FORMAT!r}")
    curve = []
    for i, item in enumerate(data["curve"]):
        point = _shape(item, _POINT_FIELDS, f"curve point {i + 1}")
        if not isinstance(point.get("step"), int):
            raise ValueError(f"curve point {i + 1} has no step")
        lr = _positive(point.get("lr"), f"curve point {i + 1}'s lr")
        curve.append(Point(point["step"], lr, point.get("loss"), point.get("smoothed")))
    if not curve:
        raise ValueError("its curve is empty")
    steps = {p.step: i for i, p in enumerate(curve)}
    suggestions = {}
    for name, item in data["suggestions"].items():
        if name not in SUGGESTION_METHODS:
            raise ValueError(f"{name!r} is not a suggestion ({', '.join(SUGGESTION_METHODS)})")
        found = _shape(item, {"lr": _NUMBER, "step": (int,)}, f"suggestion {name}")
        if found.get("step") not in steps:
            raise ValueError(
                f"suggestion {name} names step {found.get('step')!r}, not in the curve"
            )
        lr = _positive(found.get("lr"), f"suggestion {name}'s lr")
        suggestions[name] = Suggestion(lr, steps[found["step"]])
    suggested = data.get("suggested", VALLEY)
    if suggested not in SUGGESTION_METHODS:
        raise ValueError(
            f"'suggested' is {suggested!r}, not one of {', '.join(SUGGESTION_METHODS)}"
        )
    stopped = _shape(data["stopped"], _STOPPED_FIELDS, "'stopped'")
    if stopped.get("reason") not in STOP_REASONS:
        raise ValueError(
            f"'stopped' has reason {stopped.get('reason')!r}, not one of {', '.join(STOP_REASONS)}"
        )
    settings_fields = {f.name for f in dataclasses.fields(Settings)}
    settings = Settings(**{k: v for k, v in data["settings"].items() if k in settings_fields})
    for name in ("start_lr", "end_lr", "diverge", "beta"):
        _positive(getattr(settings, name), f"settings' {name}")
    if not isinstance(settings.num_steps, int) or isinstance(settings.num_steps, bool):
        raise ValueError(f"settings' num_steps is {settings.num_steps!r}, not a whole number")
    return LrFind(
        data=data.get("data") or "",
        settings=settings,
        trainer_flags=data.get("trainer_flags") or {},
        curve=curve,
        stopped=Stopped(
            stopped["reason"],
            int(stopped.get("step") or 0),
            float(stopped.get("lr") or 0.0),
            str(stopped.get("why") or ""),
        ),
        suggestions=suggestions,
        suggested=suggested,
        seconds=float(data.get("seconds") or 0.0),
        steps_seconds=float(data.get("steps_seconds") or 0.0),
        created=data.get("created") or "",
        format=data["format"],
    )

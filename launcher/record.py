"""Writing sweep.json: the one place that adds candidates to a sweep, safely and idempotently.

Who writes sweep.json: the launcher, client side, before it starts or applies anything (so the
evaluator knows every run it must wait for); and on a cluster each trainer pod's init container
(`python -m launcher record-sweep`), so that a sweep installed with helm, which has no client
side, gets its sweep.json too. Both call record() with the same inputs.

record() is a union: candidates already there are kept (a run is never forgotten), new ones are
appended; recording the same sweep again changes nothing. A different dataset or different
trainer flags under the same sweep dir are a conflict (one sentence, exit 2): those runs would
not be comparable. Concurrent writers (many init containers at once) are serialised by a
compare-and-swap on the object's version, so no candidate is lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable

from common import layout, storage
from common.cli import UserError
from launcher import trainer_flags
from launcher.spec import SweepSpec

log = logging.getLogger("launcher")

_ATTEMPTS = 20


def merged(existing: layout.Sweep | None, spec: SweepSpec, where: str) -> layout.Sweep:
    """sweep.json's content after recording `spec` into `existing`; conflicts are one sentence."""
    new = spec.to_sweep()
    if existing is None:
        return new
    for field, mine, theirs in (
        ("name", new.name, existing.name),
        ("dataset", new.data, existing.data),
        ("trainer flags", new.trainer_args, list(existing.trainer_args)),
        ("early stopping", new.early_stop, existing.early_stop),
    ):
        if _comparable(mine) != _comparable(theirs):
            raise UserError(
                f"{where} already records a sweep with {field} {_show(theirs)}, not "
                f"{_show(mine)}; use those, or another sweep directory."
            )
    known = set(existing.run_names())
    added = [c for c in new.candidates if c.run not in known]
    if not added:
        return existing
    return dataclasses.replace(existing, candidates=existing.candidates + added)


def _comparable(value: object) -> object:
    """Trainer flags compare as a set of (flag, value): their order does not change a run."""
    if isinstance(value, list):
        return sorted(trainer_flags.pairs([str(v) for v in value]), key=str)
    return value


def _show(value: object) -> str:
    if isinstance(value, list):
        return " ".join(value) if value else "(none)"
    if isinstance(value, layout.EarlyStop):
        return value.describe()
    return repr(value)


def record(spec: SweepSpec) -> layout.Sweep:
    """Add the spec's candidates to sweep.json (creating it); returns what it now holds."""
    uri = spec.sweep_dir.sweep_uri
    before: list[layout.Sweep | None] = []

    def change(existing: layout.Sweep | None) -> layout.Sweep:
        before[:] = [existing]
        return merged(existing, spec, uri)

    sweep = _update(uri, change)
    existing = before[0] if before else None
    if existing is None or sweep is not existing:
        added = len(sweep.candidates) - (len(existing.candidates) if existing else 0)
        log.info("recorded %d new run(s) in %s (%d in all)", added, uri, len(sweep.candidates))
    return sweep


def record_stage(sweep_dir: layout.SweepDir, stage: layout.Stage) -> layout.Sweep:
    """Put `stage` into sweep.json's stages: replacing the one of its name, else appended."""

    def change(existing: layout.Sweep | None) -> layout.Sweep:
        if existing is None:
            raise UserError(f"no {layout.SWEEP} in {sweep_dir.uri} to record a stage in.")
        stages = [s for s in existing.stages if s.name != stage.name]
        at = next((i for i, s in enumerate(existing.stages) if s.name == stage.name), None)
        stages.insert(len(stages) if at is None else at, stage)
        return dataclasses.replace(existing, stages=stages)

    return _update(sweep_dir.sweep_uri, change)


def _update(uri: str, change: Callable[[layout.Sweep | None], layout.Sweep]) -> layout.Sweep:
    """Read sweep.json, apply `change`, write it back unless changed meanwhile (then again)."""
    for _ in range(_ATTEMPTS):
        current = storage.read_versioned(uri)
        existing = None
        if current is not None:
            try:
                data = json.loads(current[0])
            except ValueError as exc:
                raise UserError(f"{uri} is not valid JSON ({exc}); fix or move it away.") from None
            existing = layout.Sweep.from_dict(data, where=uri)
        sweep = change(existing)
        if existing is not None and sweep is existing:
            return existing
        body = (json.dumps(sweep.to_dict(), indent=2) + "\n").encode()
        if storage.write_if_version(uri, body, current[1] if current else None) is not None:
            return sweep
    raise UserError(f"{uri} kept changing while recording the sweep; try again.")

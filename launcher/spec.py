"""What one sweep launch is: name, dataset, sweep dir, learning rates and shared trainer flags.

Both backends, the renderer and sweep.json are made from this one value, so a local run and a
cluster run of the same inputs run the same trainer commands.

`workers` (the launcher's --workers, values trainer.workers) is how many processes train each
run together. Like the GPUs per pod it is not recorded in sweep.json: it changes how a run is
computed, not what it computes (the global batch is the same), so record-sweep never sees it
and a refine may use another count (whether a started run resumes under another count is the
trainer's call, made from its run dir).
"""

from __future__ import annotations

import dataclasses

from common import layout
from common.layout import run_name_for_lr


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str  # Kubernetes-safe; prefixes every object name
    data: str  # dataset URI (normalised)
    out: str  # sweep dir URI (normalised)
    lrs: tuple[float, ...]
    trainer_args: tuple[str, ...] = ()
    early_stop: layout.EarlyStop = layout.EarlyStop()
    workers: int = 1  # processes (local) or pods (kubernetes) per run
    eval_interval: float | None = None  # local: the evaluator's --interval (None: its default)

    @property
    def sweep_dir(self) -> layout.SweepDir:
        return layout.SweepDir(self.out)

    def run_dir(self, lr: float) -> str:
        return self.sweep_dir.run(run_name_for_lr(lr)).uri

    def trainer_args_for(self, lr: float) -> list[str]:
        """The trainer's command line for one run, less the process-specific flags."""
        return [
            "--data", self.data,
            "--run-dir", self.run_dir(lr),
            "--lr", lr_text(lr),
            *self.trainer_args,
        ]  # fmt: skip

    def to_sweep(self) -> layout.Sweep:
        return layout.Sweep(
            name=self.name,
            data=self.data,
            candidates=[layout.Candidate(run_name_for_lr(lr), lr) for lr in self.lrs],
            trainer_args=list(self.trainer_args),
            early_stop=self.early_stop,
            created=layout.now(),
        )

    def early_stop_args(self) -> list[str]:
        """`record-sweep`'s early-stopping flags; none for the default rule, so that sweeps
        without early stopping render as they always did."""
        rule = self.early_stop
        if rule.rule == "none":
            return []
        grace = ["--grace", str(rule.grace)] if rule.grace is not None else []
        patience = ["--patience", str(rule.patience)] if rule.patience else []
        return ["--early-stop", rule.rule, *grace, "--eta", str(rule.eta), *patience]


def lr_text(lr: float) -> str:
    """The lr as the trainer reads it back exactly: `0.01`, `1e-05` (its run name's spelling)."""
    return run_name_for_lr(lr)[len("lr-") :]

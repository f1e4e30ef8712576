"""Which worker of a run this process is: the chief writes, the others only compute.

A run is one process (the usual case) or several processes in lockstep under TensorFlow's
MultiWorkerMirroredStrategy: `--workers N --worker-hosts ...` (what the launcher and the chart
pass; the index comes from an Indexed Job's JOB_COMPLETION_INDEX), or a TF_CONFIG that some
other tool set. Worker 0 (or the TF_CONFIG "chief" task) is the chief: the only one that writes
into the run dir (hparams, checkpoints, events, export, complete.json), as TensorFlow's
multi-worker guide prescribes. No TensorFlow here: the trainer decides this before it loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from common.cli import UserError
from trainer import loopback
from trainer.config import TF_CONFIG, TrainConfig


@dataclasses.dataclass(frozen=True)
class Cluster:
    count: int  # processes in the run
    index: int  # this one's position among them (0 = the chief, unless TF_CONFIG names one)
    chief: bool  # the one that writes
    tf_config: dict[str, Any] | None  # what MultiWorkerMirroredStrategy reads; None: alone

    @property
    def several(self) -> bool:
        return self.count > 1

    def describe(self) -> str:
        role = "chief" if self.chief else "worker"
        return f"{role} {self.index} of {self.count} workers"


ALONE = Cluster(count=1, index=0, chief=True, tf_config=None)


class WorkerLost(RuntimeError):
    """Another worker of the run died or stopped answering: this one must exit too (code 1,
    a crash worth a retry), so that the Job restarts the whole group from the last checkpoint."""


def cluster_of(config: TrainConfig, env: Mapping[str, str] | None = None) -> Cluster:
    """The cluster from the worker flags (already checked), else from TF_CONFIG, else alone.

    When every worker is on this machine's loopback, the trainer's own process re-executes
    itself here (once, before TensorFlow loads) so that its gRPC server listens on loopback
    only: see trainer.loopback."""
    env = os.environ if env is None else env
    if config.workers > 1:
        cluster = Cluster(config.workers, config.worker_index, config.worker_index == 0,
                          config.tf_config())  # fmt: skip
    else:
        raw = env.get(TF_CONFIG, "").strip()
        cluster = _from_tf_config(raw) if raw else ALONE
    if cluster.several:
        loopback.confine(addresses(cluster), cluster.index)
    return cluster


def addresses(cluster: Cluster) -> list[str]:
    """host:port of every process of the run, in Cluster.index order (chiefs, then workers)."""
    members = (cluster.tf_config or {}).get("cluster") or {}
    return [str(a) for kind in ("chief", "worker") for a in members.get(kind) or []]


def _from_tf_config(raw: str) -> Cluster:
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = str(task["type"]), int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"{TF_CONFIG} is not a cluster description TensorFlow reads ({exc}); expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}.'
        ) from None
    count = len(chiefs) + len(workers)
    members = {"chief": chiefs, "worker": workers}
    if kind not in members or not 0 <= index < len(members[kind]):
        raise UserError(
            f"{TF_CONFIG}'s task {kind} {index} is not in its cluster "
            f"({len(chiefs)} chief, {len(workers)} worker(s))."
        )
    chief = kind == "chief" or (not chiefs and index == 0)
    position = index if kind == "chief" else len(chiefs) + index
    if count == 1:
        return ALONE
    return Cluster(count, position, chief, spec)

"""Kubernetes names and labels of a sweep's objects, derived in one place.

Every object name is a DNS-1123 label (lower-case letters, digits, '-'; at most 63 characters;
starting with a letter so that it is also a valid Service name), so that pod names, the Job
controller's `job-name` label and Service DNS names derived from it stay valid. A Job's name
carries the sweep and the learning rate (`flowers-lr-0-01`), so `kubectl get jobs` reads.
"""

from __future__ import annotations

import re

from common.cli import UserError
from common.layout import run_name_for_lr
from launcher.spec import lr_text

MAX_NAME = 63
# The chart allows sweep names of at most 40 characters (values.schema.json); so do we.
MAX_SWEEP_NAME = 40
APP = "inception-finetune"
MANAGED_BY = "inception-finetune-launcher"
# Label keys of our own; the prefix is a DNS subdomain, as Kubernetes requires.
SWEEP_LABEL = "inception-finetune/sweep"
LR_LABEL = "inception-finetune/lr"
RUN_LABEL = "inception-finetune/run"
SPEC_HASH = "inception-finetune/spec-hash"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_sweep_name(name: str) -> str:
    """The name itself when every object name made from it is valid; else one sentence."""
    if not _LABEL.match(name):
        raise UserError(
            f"sweep name {name!r} cannot be a Kubernetes name: use lower-case letters, digits and "
            "'-', starting with a letter and ending with a letter or digit (pass --name)."
        )
    if len(name) > MAX_SWEEP_NAME:
        raise UserError(
            f"sweep name {name!r} is {len(name)} characters long; at most {MAX_SWEEP_NAME} leave "
            f"room for the suffixes of its object names (pass a shorter --name)."
        )
    return name


def check_job_name(name: str) -> str:
    """A Job name made from a sweep and an lr: at most 63 characters (its pods' job-name label)."""
    if len(name) > MAX_NAME:
        raise UserError(
            f"Job name {name!r} would be {len(name)} characters long (at most {MAX_NAME}); "
            "pass a shorter --name."
        )
    return name


def sweep_name_from(text: str) -> str:
    """A Kubernetes-safe name made from a folder name (`My_Flowers` -> `my-flowers`)."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)  # must start with a letter
    if not name:
        raise UserError(
            f"cannot make a Kubernetes name from {text!r}; pass --name (lower-case letters, "
            "digits and '-', starting with a letter)."
        )
    return name[:MAX_SWEEP_NAME].rstrip("-")


def lr_suffix(lr: float) -> str:
    """`lr-0-01`, `lr-1e-05`: the run name with the characters a name cannot hold replaced."""
    return run_name_for_lr(lr).replace(".", "-").replace("+", "").lower()


def trainer_job(sweep: str, lr: float) -> str:
    return check_job_name(f"{sweep}-{lr_suffix(lr)}")


def trainer_service(sweep: str, lr: float) -> str:
    """The headless Service of a run's workers (--workers > 1): the Job's own name, so that
    worker i is `<job>-<i>.<job>` (the pod's hostname, then its subdomain)."""
    return trainer_job(sweep, lr)


def worker_hostname(job: str, index: int) -> str:
    """What Kubernetes names the pod of index i of an Indexed Job (its hostname)."""
    return f"{job}-{index}"


def check_worker_hostnames(job: str, workers: int) -> None:
    """Every worker's hostname fits a DNS label (Kubernetes does not shorten it: a longer one
    is a pod that cannot be created); else one sentence."""
    longest = worker_hostname(job, workers - 1)
    if len(longest) > MAX_NAME:
        raise UserError(
            f"with {workers} workers, the hostname of the last one, {longest!r}, would be "
            f"{len(longest)} characters long (at most {MAX_NAME}); pass a shorter --name."
        )


def evaluator(sweep: str) -> str:
    return f"{sweep}-evaluator"


def tensorboard(sweep: str) -> str:
    return f"{sweep}-tensorboard"


def preprocess_job(name: str) -> str:
    return f"{name}-preprocess"


def tuner_job(sweep: str) -> str:
    """`launcher tune` on a cluster: the Job whose pod runs the tuner itself."""
    return f"{sweep}-tuner"


def lr_find_job(sweep: str) -> str:
    """The tuner's range test (`python -m trainer lr-find`), one GPU Job."""
    return f"{sweep}-lr-find"


def selector(sweep: str) -> dict[str, str]:
    """The labels every object of one sweep carries: what status and delete select on."""
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": sweep}


def component_selector(sweep: str, component: str) -> dict[str, str]:
    """The labels of one component's objects of the sweep (its trainer Jobs, its tuner...)."""
    return {**selector(sweep), "app.kubernetes.io/component": component}


def labels(sweep: str, component: str, lr: float | None = None) -> dict[str, str]:
    """The recommended app.kubernetes.io labels, plus the sweep and, for a run, its lr."""
    out = {
        **selector(sweep),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SWEEP_LABEL: sweep,
    }
    if lr is not None:
        out[LR_LABEL] = lr_text(lr)
        out[RUN_LABEL] = run_name_for_lr(lr)
    return out

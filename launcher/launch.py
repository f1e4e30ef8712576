"""`sweep` and `record-sweep`: from command line and values to a SweepSpec, then to a backend.

Order, so that a bad input creates nothing: arguments and settings are checked; with
--dry-run the result is printed and nothing else happens (no bucket, no cluster); then the
dataset (dataset.json must be there) and the sweep dir are checked, the cluster is reached and
every object is checked for conflicts; only then is sweep.json recorded, and then the objects
are created or the local processes started.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from common import layout, manifest, storage
from common.cli import UserError
from launcher import names, settings, trainer_flags, validators
from launcher.spec import SweepSpec

log = logging.getLogger("launcher")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The convenience flags as values (`--gpus 0` -> trainer.gpus: 0)."""
    out: dict[str, Any] = {}
    if getattr(args, "gpus", None) is not None:
        settings.set_dotted(out, "trainer.gpus", args.gpus)
    if getattr(args, "image_tag", None):
        settings.set_dotted(out, "image.cpu.tag", args.image_tag)
        settings.set_dotted(out, "image.gpu.tag", args.image_tag)
    if getattr(args, "queue", None) is not None:
        settings.set_dotted(out, "kueue.queueName", args.queue)
    if getattr(args, "workers", None) is not None:
        settings.set_dotted(out, "trainer.workers", args.workers)
    if getattr(args, "eval_interval", None) is not None:
        settings.set_dotted(out, "evaluator.interval", args.eval_interval)
    for flag, key in (("early_stop", "rule"), ("grace", "grace"), ("eta", "eta"),
                      ("patience", "patience")):  # fmt: skip
        if getattr(args, flag, None) is not None:
            settings.set_dotted(out, f"earlyStop.{key}", getattr(args, flag))
    return out


def early_stop_from(values: dict[str, Any], args: argparse.Namespace) -> layout.EarlyStop:
    """The rule from earlyStop in the values (the flags already merged in); one sentence if bad."""
    rule = settings.get(values, "earlyStop.rule", str, "none")
    grace = settings.get(values, "earlyStop.grace", int, None)
    eta = settings.get(values, "earlyStop.eta", int, 3)
    patience = settings.get(values, "earlyStop.patience", int, None)
    if rule == "none" and any(getattr(args, f, None) for f in ("grace", "eta", "patience")):
        raise UserError("--grace, --eta and --patience only apply with --early-stop median or "
                        "asha.")  # fmt: skip
    try:
        return layout.EarlyStop(rule, grace, eta, patience)
    except ValueError as exc:
        raise UserError(f"settings: earlyStop: {exc}.") from None


def workers_from(values: dict[str, Any]) -> int:
    """trainer.workers from the values (--workers already merged in); one sentence if bad.

    Checked here for both backends (the local one never reads the chart's schema)."""
    from launcher.cli import MAX_WORKERS

    workers = settings.get(values, "trainer.workers", int, 1)
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(
            f"settings: trainer.workers must be a whole number from 1 to {MAX_WORKERS}, not "
            f"{workers}."
        )
    return workers


def load_values(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    return settings.load(args.values, overrides_from(args), required=backend == "kubernetes")


def _lrs_from_values(values: dict[str, Any]) -> list[float] | None:
    raw = values.get("lrs")
    if raw in (None, []):
        return None
    if not isinstance(raw, list):
        raise UserError(f"settings: lrs must be a list of numbers, not {raw!r}.")
    try:
        return validators.distinct([validators.learning_rate(str(x)) for x in raw])
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"settings: lrs: {exc}.") from None


def resolve(
    args: argparse.Namespace,
    values: dict[str, Any],
    backend: str,
    lrs: list[float] | None = None,
    check_schema: bool = True,
) -> SweepSpec:
    """The sweep to launch: command line first, then the values files; checked (against the
    chart's schema too, unless `check_schema` is false: see validate)."""
    data = getattr(args, "data", None) or values.get("data")
    out = getattr(args, "out", None) or values.get("out")
    lrs = lrs or getattr(args, "lrs", None) or _lrs_from_values(values)
    for flag, value in (("--data", data), ("--out", out), ("--lrs", lrs)):
        if not value:
            raise UserError(f"{flag} is required (or `{flag[2:]}` in a values file).")
    if not isinstance(data, str) or not isinstance(out, str):
        raise UserError("settings: data and out must be strings (URIs).")
    data, out = storage.normalize(data), storage.normalize(out)
    from_values = trainer_flags.check(
        settings.get(values, "trainerArgs", list, []), "settings: trainerArgs"
    )
    given = trainer_flags.from_namespace(args)
    for flags in (from_values, given):
        trainer_flags.check_exclusive(flags)
    extra = trainer_flags.merge(from_values, given)
    name = getattr(args, "name", None) or values.get("name") or ""
    if not isinstance(name, str):
        raise UserError(f"settings: name must be a string, not {name!r}.")
    name = name or names.sweep_name_from(storage.basename(out))
    early_stop = early_stop_from(values, args)
    workers = workers_from(values)
    spec = SweepSpec(name, data, out, tuple(lrs), tuple(extra), early_stop, workers,
                     getattr(args, "eval_interval", None))  # fmt: skip
    validate(spec, values, backend, check_schema)
    return spec


def validate(
    spec: SweepSpec, values: dict[str, Any], backend: str, check_schema: bool = True
) -> None:
    """What a backend needs of a sweep beyond its arguments: names that fit, gs:// URIs on a
    cluster, settings that the chart's schema accepts. A tuner pod passes check_schema=False:
    its image holds no chart, and its values were checked where they were merged (by the
    launcher that started it, or by helm)."""
    names.check_sweep_name(spec.name)
    for lr in spec.lrs:
        names.trainer_job(spec.name, lr)  # every Job name fits
    if backend != "kubernetes":
        return
    if spec.workers > 1:
        for lr in spec.lrs:
            names.check_worker_hostnames(names.trainer_job(spec.name, lr), spec.workers)
    for flag, uri in (("--data", spec.data), ("--out", spec.out)):
        if not storage.is_gcs(uri):
            raise UserError(
                f"{flag} {uri} is a local path, which pods cannot see; with --backend "
                "kubernetes use gs://BUCKET/PATH."
            )
    if check_schema:
        settings.check_schema(_as_values(values, spec))


def _as_values(values: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
    """The values a `helm install` of this sweep would take (for the chart's schema)."""
    return {
        **values,
        "data": spec.data,
        "out": spec.out,
        "name": spec.name,
        "lrs": list(spec.lrs),
        "trainerArgs": list(spec.trainer_args),
        "earlyStop": {
            **(values.get("earlyStop") or {}),
            **{k: v for k, v in vars(spec.early_stop).items() if v is not None},
        },
    }


def check_bucket(spec: SweepSpec) -> None:
    """The dataset is complete and the sweep dir writable: else one sentence, nothing written."""
    manifest.load(spec.data)
    storage.check_writable_location(spec.out)
    args = list(spec.trainer_args)
    if "--weights" in args:
        weights = args[args.index("--weights") + 1]
        if weights.lower() not in ("imagenet", "none") and not storage.exists(weights):
            raise UserError(f"--weights {weights} does not exist.")


def sweep_main(args: argparse.Namespace) -> int:
    values = load_values(args, args.backend)
    spec = resolve(args, values, args.backend)
    return launch(spec, values, args)


def launch(spec: SweepSpec, values: dict[str, Any], args: argparse.Namespace) -> int:
    """Run or apply a resolved sweep with the backend the command line chose."""
    if args.backend == "kubernetes":
        from launcher import cluster_backend

        return cluster_backend.run(spec, values, args)
    from launcher import local

    if args.dry_run:
        for lr in spec.lrs:
            for command in local.trainer_commands(spec, lr):
                print(" ".join(command))
        print(" ".join(local.evaluator_command(spec)))
        return 0
    check_bucket(spec)
    return local.run(spec, args)


def record_main(args: argparse.Namespace) -> int:
    from launcher import record

    extra = trainer_flags.from_namespace(args)
    trainer_flags.check_exclusive(extra)
    spec = SweepSpec(
        names.check_sweep_name(args.name),
        storage.normalize(args.data),
        storage.normalize(args.out),
        tuple(args.lrs),
        tuple(extra),
        early_stop_from(settings.merge({}, overrides_from(args)), args),
    )
    record.record(spec)
    return 0

"""The Kubernetes objects of a sweep, rendered from a SweepSpec and the chart's values.

This is the launcher's half of "one truth": `helm template` of charts/inception-finetune must
give these same objects for the same inputs (only `app.kubernetes.io/managed-by` differs).
Objects are plain dicts in apply order: ServiceAccount, Service, Deployments, PodMonitor, Jobs.

Choices that every pod shares, and why:
- Pod Security "restricted": non-root with a fixed uid/gid (values.yaml's `uid`, 10001: high,
  so that it is no host user's; the images' USER is the same), read-only root filesystem,
  no privilege escalation, every capability dropped, seccomp RuntimeDefault. The only
  writable paths are emptyDirs: /tmp (also HOME) and the Keras weight cache (KERAS_HOME).
- No Kubernetes API token in the pods (automountServiceAccountToken: false): they only talk to
  the bucket (the one exception is the tuner's pod: `launcher tune` on a cluster, below).
  Bucket credentials come from workload identity (ServiceAccount annotations) or a
  Secret-mounted key file named by GOOGLE_APPLICATION_CREDENTIALS; never from args or env values.
- Trainer Jobs: a disruption (preemption, eviction, drain: the DisruptionTarget condition) and a
  trainer that checkpointed on SIGTERM (`--exit-code-on-stop 143`: exiting 0 would let the Job
  count the stopped pod as Succeeded and lose the run) are ignored by the retry count; exit
  code 2 (a user error, in the trainer or the sweep.json init container) fails the Job at once.
  `podReplacementPolicy: Failed` starts a replacement only once the old pod is gone, so two
  trainers never share a run dir. These need Kubernetes 1.31+ (podFailurePolicy GA).
- Several workers per run (trainer.workers N > 1, TensorFlow's MultiWorkerMirroredStrategy):
  the run's Job is Indexed (completions = parallelism = N: every worker at once, worker i in
  the pod of index i, Kubernetes setting JOB_COMPLETION_INDEX and the hostname <job>-<i>),
  behind a headless Service of the Job's name that the pods name as their subdomain, so that
  worker i is <job>-<i>.<job>:2222 (the trainer's --worker-hosts pattern). Kubernetes restarts
  only the pod that failed; the group restarts because the trainer makes the surviving workers
  fail too, within a bounded collective timeout, when a peer dies, and every replacement
  resumes from the last checkpoint. So one crash costs each worker one failure: retries are
  counted per index (backoffLimitPerIndex = trainer.backoffLimit, maxFailedIndexes 0: the Job
  fails, and its other pods are stopped, once any worker is past its retries), and backoffLimit
  = trainer.backoffLimit * N bounds the total the same way where backoffLimitPerIndex is off.
  Per-index counting also keeps the replacement delay per worker (10 s, 20 s, ...); a Job-wide
  count would grow N times as fast and reach the 10-minute cap after a few crashes. The rules
  above hold for every worker (a disruption and exit code 143 never count, 2 fails the Job at
  once). The chief's success ends the Job (successPolicy on index 0): it writes complete.json,
  and a worker still lingering then has nothing left to do. backoffLimitPerIndex and
  successPolicy are beta in 1.31 and 1.32 (on by default) and GA from 1.33.
- Each trainer pod's init container records its candidate in sweep.json (see launcher.record),
  so helm installs write sweep.json too and the sweep-wide objects do not depend on the list
  of learning rates: a refine or a `helm upgrade` with more lrs only adds Jobs.
- `launcher tune` on a cluster (launcher.tune_cluster): one tuner Job (CPU image, `python -m
  launcher tune --in-cluster`) that creates the stages' objects itself: its range test as a
  one-pod lr-find Job shaped as a trainer's, then each stage's sweep objects as above. The
  values it renders them with travel in its env (VALUES_ENV, JSON), so that it makes the
  objects a laptop would. It is the one pod with an API token (see tuner()); it is not put
  through Kueue (it would hold queue quota for the whole tuning while its trainers wait).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from common.cli import UserError
from launcher import names
from launcher.settings import get
from launcher.spec import SweepSpec, lr_text

if TYPE_CHECKING:
    from launcher.tune import Options

TMP_DIR = "/tmp"
KERAS_CACHE = "/var/cache/keras"
CREDENTIALS_DIR = "/var/secrets/google"
# What the trainer exits with after checkpointing on SIGTERM (its --exit-code-on-stop).
STOPPED_EXIT_CODE = 143
USER_ERROR_EXIT_CODE = 2
# Where the workers of a run reach each other (MultiWorkerMirroredStrategy's gRPC server).
WORKER_PORT = 2222
WORKER_PORT_NAME = "collective"
# The tuner pod's settings: the merged values as JSON (see tuner_values).
VALUES_ENV = "FINETUNE_VALUES"
# The ServiceAccount of k8s/rbac.yaml: exactly the launcher's rights (values tuner.*).
TUNER_SERVICE_ACCOUNT = "inception-finetune-launcher"

Obj = dict[str, Any]


class Renderer:
    """Renders the objects of one sweep (or one preprocess run) from the merged values."""

    def __init__(self, values: dict[str, Any], namespace: str | None = None) -> None:
        self.values = values
        self.namespace = namespace

    # ------------------------------------------------------------ sweep

    def sweep(self, spec: SweepSpec) -> list[Obj]:
        """Every object of a sweep: shared ones first, then one trainer Job per lr."""
        objs: list[Obj] = []
        if self._setting("serviceAccount.create", bool, True):
            objs.append(self.service_account(spec.name))
        if self._setting("tensorboard.enabled", bool, True):
            objs.append(self.tensorboard_service(spec))
        objs.append(self.evaluator(spec))
        if self._setting("tensorboard.enabled", bool, True):
            objs.append(self.tensorboard(spec))
        if self._setting("podMonitor.enabled", bool, False):
            objs.append(self.pod_monitor(spec.name))
        for lr in spec.lrs:
            if spec.workers > 1:
                objs.append(self.trainer_service(spec, lr))
            objs.append(self.trainer_job(spec, lr))
        return objs

    def trainer_job(self, spec: SweepSpec, lr: float) -> Obj:
        image, resources = self._trainer_image_and_resources()
        port = self._setting("trainer.metricsPort", int, 9090)
        labels = names.labels(spec.name, "trainer", lr)
        job_name = names.trainer_job(spec.name, lr)
        workers = spec.workers
        record = self._container(
            "record-sweep",
            image,
            ["python", "-m", "launcher", "record-sweep"],
            ["--out", spec.out, "--data", spec.data, "--name", spec.name, "--lrs", lr_text(lr)]
            + spec.early_stop_args()
            + list(spec.trainer_args),
        )
        worker_args: list[str] = []
        ports = [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        if workers > 1:
            worker_args = ["--workers", str(workers), "--worker-hosts", worker_hosts(job_name)]
            ports.append(
                {"name": WORKER_PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"}
            )
        trainer = self._container(
            "trainer",
            image,
            ["python", "-m", "trainer"],
            [
                "--data",
                spec.data,
                "--run-dir",
                spec.run_dir(lr),
                "--lr",
                lr_text(lr),
                "--exit-code-on-stop",
                str(STOPPED_EXIT_CODE),
                "--metrics-port",
                str(port),
                *worker_args,
                *spec.trainer_args,
            ],  # fmt: skip
            resources=resources,
            ports=ports,
        )
        pod = self._trainer_pod(spec, trainer, init_containers=[record])
        retries = self._setting("trainer.backoffLimit", int, 3)
        job_spec: Obj = {"backoffLimit": retries}
        if workers > 1:
            # Retries per worker; see the module's docstring for why.
            pod["subdomain"] = names.trainer_service(spec.name, lr)
            job_spec = {
                "backoffLimit": retries * workers,
                "backoffLimitPerIndex": retries,
                "maxFailedIndexes": 0,
                "completionMode": "Indexed",
                "completions": workers,
                "parallelism": workers,
                "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
            }
        job_spec = self._trainer_job_spec(job_spec, pod, labels, "trainer")
        return self._job(job_name, labels, job_spec)

    def _trainer_pod(
        self, spec: SweepSpec, container: Obj, init_containers: list[Obj] | None = None
    ) -> Obj:
        """A trainer's pod (a run's or the range test's): its placement and grace period."""
        return self._pod(
            spec.name,
            [container],
            init_containers=init_containers,
            where="trainer",
            restart_policy="Never",
            grace=self._setting("trainer.terminationGracePeriodSeconds", int, 120),
        )

    def _trainer_job_spec(
        self, job_spec: Obj, pod: Obj, labels: dict[str, str], container: str | None
    ) -> Obj:
        """job_spec with what every trainer's Job has: the failure policy of the module's
        docstring, no replacement beside a terminating pod, trainer.activeDeadlineSeconds."""
        out: Obj = {
            **job_spec,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {"rules": self._failure_rules(container)},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        deadline = self._setting("trainer.activeDeadlineSeconds", int, None)
        if deadline is not None:
            out["activeDeadlineSeconds"] = deadline
        return out

    def _trainer_image_and_resources(self) -> tuple[str, Obj]:
        """A trainer pod's image (GPU, or CPU with trainer.gpus 0) and resources (GPUs added)."""
        gpus = self._setting("trainer.gpus", int, 1)
        image = self._image("gpu" if gpus > 0 else "cpu")
        resources = self._setting("trainer.resources", dict, {})
        if gpus > 0:
            resources.setdefault("limits", {})["nvidia.com/gpu"] = gpus
        return image, resources

    def trainer_service(self, spec: SweepSpec, lr: float) -> Obj:
        """The headless Service through which the workers of one run find each other: no
        cluster IP, one DNS name per pod (<job>-<i>.<service>), published before the pods are
        ready (they have no readiness probe; their collective setup is what starts them)."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta(
                names.trainer_service(spec.name, lr), names.labels(spec.name, "trainer", lr)
            ),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {
                    **names.component_selector(spec.name, "trainer"),
                    names.RUN_LABEL: names.labels(spec.name, "trainer", lr)[names.RUN_LABEL],
                },
                "ports": [
                    {
                        "name": WORKER_PORT_NAME,
                        "port": WORKER_PORT,
                        "targetPort": WORKER_PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        }

    def evaluator(self, spec: SweepSpec) -> Obj:
        port = self._setting("evaluator.metricsPort", int, 9091)
        interval = self._setting("evaluator.interval", (int, float), 60)
        container = self._container(
            "evaluator",
            self._image("cpu"),
            ["python", "-m", "evaluator"],
            [
                "--sweep-dir",
                spec.out,
                "--interval",
                _number(interval),
                "--metrics-port",
                str(port),
                "--keep-running",
            ],  # fmt: skip
            resources=self._setting("evaluator.resources", dict, {}),
            ports=[{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        )
        pod = self._pod(spec.name, [container], where="evaluator", restart_policy="Always")
        return self._deployment(names.evaluator(spec.name), spec.name, "evaluator", pod)

    def tensorboard(self, spec: SweepSpec) -> Obj:
        port = self._setting("tensorboard.port", int, 6006)
        container = self._container(
            "tensorboard",
            self._image("cpu"),
            ["tensorboard"],
            ["--logdir", spec.out, "--host", "0.0.0.0", "--port", str(port)],
            resources=self._setting("tensorboard.resources", dict, {}),
            ports=[{"name": "http", "containerPort": port, "protocol": "TCP"}],
        )
        container["readinessProbe"] = {
            "httpGet": {"path": "/", "port": "http"},
            "periodSeconds": 10,
        }
        pod = self._pod(spec.name, [container], where=None, restart_policy="Always")
        return self._deployment(names.tensorboard(spec.name), spec.name, "tensorboard", pod)

    def tensorboard_service(self, spec: SweepSpec) -> Obj:
        port = self._setting("tensorboard.port", int, 6006)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta(
                names.tensorboard(spec.name), names.labels(spec.name, "tensorboard")
            ),
            "spec": {
                "type": "ClusterIP",
                "selector": names.component_selector(spec.name, "tensorboard"),
                "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
            },
        }

    def pod_monitor(self, sweep: str) -> Obj:
        extra = self._setting("podMonitor.labels", dict, {})
        labels = {**names.labels(sweep, "monitoring"), **extra}
        interval = self._setting("podMonitor.interval", str, "30s")
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": self._meta(sweep, labels),
            "spec": {
                "selector": {
                    "matchLabels": names.selector(sweep),
                    "matchExpressions": [
                        {
                            "key": "app.kubernetes.io/component",
                            "operator": "In",
                            "values": ["trainer", "evaluator"],
                        }
                    ],
                },
                "podMetricsEndpoints": [{"port": "metrics", "interval": interval}],
            },
        }

    def service_account(self, sweep: str) -> Obj:
        meta = self._meta(self._service_account_name(sweep), names.labels(sweep, "identity"))
        annotations = self._setting("serviceAccount.annotations", dict, {})
        if annotations:
            meta["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}

    # ------------------------------------------------------------ tune

    def lr_find(self, spec: SweepSpec, run_dir: str) -> list[Obj]:
        """The tuner's range test: the sweep's ServiceAccount (its pod runs as it, and the
        first stage has not made it yet) and one Job running `python -m trainer lr-find`."""
        objs = []
        if self._setting("serviceAccount.create", bool, True):
            objs.append(self.service_account(spec.name))
        return [*objs, self.lr_find_job(spec, run_dir)]

    def lr_find_job(self, spec: SweepSpec, run_dir: str) -> Obj:
        """A trainer's pod (image, GPUs, resources, placement) with one process: no metrics
        port, no init container (the tuner records sweep.json itself)."""
        image, resources = self._trainer_image_and_resources()
        container = self._container(
            "lr-find",
            image,
            ["python", "-m", "trainer", "lr-find"],
            ["--data", spec.data, "--run-dir", run_dir, *spec.trainer_args],
            resources=resources,
        )
        labels = names.labels(spec.name, "lr-find")
        job_spec = self._trainer_job_spec(
            {"backoffLimit": self._setting("trainer.backoffLimit", int, 3)},
            self._trainer_pod(spec, container),
            labels,
            None,
        )
        return self._job(names.lr_find_job(spec.name), labels, job_spec)

    def tuner(self, spec: SweepSpec, options: Options) -> Obj:
        """The Job whose pod runs `launcher tune --in-cluster` on this sweep (spec: its data,
        out, name, trainer flags and early-stopping rule; its lrs are the stages' to choose)."""
        container = self._container(
            "tuner",
            self._image("cpu"),
            ["python", "-m", "launcher", "tune"],
            tuner_args(spec, options),
            resources=self._setting("tuner.resources", dict, {}),
        )
        values = json.dumps(tuner_values(self.values, spec), sort_keys=True, separators=(",", ":"))
        container["env"].append({"name": VALUES_ENV, "value": values})
        pod = self._pod(spec.name, [container], where=None, restart_policy="Never")
        pod["serviceAccountName"] = self._setting(
            "tuner.serviceAccountName", str, TUNER_SERVICE_ACCOUNT
        )
        # The one pod that talks to the Kubernetes API: it creates the stages' Jobs, so it
        # needs its ServiceAccount's token. Every other pod only talks to the bucket.
        pod["automountServiceAccountToken"] = True
        labels = names.labels(spec.name, "tuner")
        job_spec: Obj = {
            # A retried pod resumes: the Tuner redoes nothing that sweep.json's stages record.
            "backoffLimit": self._setting("tuner.backoffLimit", int, 3),
            "podReplacementPolicy": "Failed",  # never two tuners on one sweep
            "podFailurePolicy": {"rules": self._failure_rules(None)},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        return self._job(names.tuner_job(spec.name), labels, job_spec, queued=False)

    # ------------------------------------------------------------ preprocess

    def preprocess(
        self, name: str, train_dir: str, val_dir: str, out: str, tasks: int, extra: list[str]
    ) -> list[Obj]:
        """A preprocess Job (Indexed, K pods at once, when tasks > 1), and its ServiceAccount."""
        args = ["--train-dir", train_dir, "--val-dir", val_dir, "--out", out, *extra]
        if tasks > 1:  # each pod's --task-index comes from JOB_COMPLETION_INDEX
            args += ["--task-count", str(tasks)]
        container = self._container(
            "preprocess",
            self._image("cpu"),
            ["python", "-m", "preprocess"],
            args,
            resources=self._setting("evaluator.resources", dict, {}),
        )
        labels = names.labels(name, "preprocess")
        pod = self._pod(name, [container], where="evaluator", restart_policy="Never")
        job_spec: Obj = {
            "backoffLimit": self._setting("trainer.backoffLimit", int, 3),
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {"rules": self._failure_rules(None)},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        if tasks > 1:
            job_spec.update(completionMode="Indexed", completions=tasks, parallelism=tasks)
        objs = []
        if self._setting("serviceAccount.create", bool, True):
            objs.append(self.service_account(name))
        return [*objs, self._job(names.preprocess_job(name), labels, job_spec)]

    # ------------------------------------------------------------ parts

    def _setting(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        return get(self.values, key, kind, default)

    def _meta(self, name: str, labels: dict[str, str]) -> Obj:
        meta: Obj = {"name": name}
        if self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = labels
        return meta

    def _image(self, kind: str) -> str:
        repository = self._setting(f"image.{kind}.repository", str, f"inception-finetune-{kind}")
        tag = self._setting(f"image.{kind}.tag", str, "")
        return f"{repository}:{tag}" if tag else repository

    def _uid(self) -> int:
        """values.yaml's uid: the chart's and the images' one number, never a copy of it here."""
        uid = self._setting("uid", int, None)
        if uid is None:
            raise UserError("settings: uid is missing; the chart's values.yaml sets it (10001).")
        return uid

    def _service_account_name(self, sweep: str) -> str:
        return self._setting("serviceAccount.name", str, "") or sweep

    def _env(self) -> list[Obj]:
        env = [
            {"name": "HOME", "value": TMP_DIR},
            {"name": "KERAS_HOME", "value": KERAS_CACHE},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ]
        key = self._setting("credentials.key", str, "key.json")
        if self._setting("credentials.secretName", str, ""):
            path = f"{CREDENTIALS_DIR}/{key}"
            env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": path})
        emulator = self._setting("storageEmulatorHost", str, "")
        if emulator:
            env.append({"name": "STORAGE_EMULATOR_HOST", "value": emulator})
        return env

    def _container(
        self,
        name: str,
        image: str,
        command: list[str],
        args: list[str],
        *,
        resources: Obj | None = None,
        ports: list[Obj] | None = None,
    ) -> Obj:
        mounts = [
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "keras-cache", "mountPath": KERAS_CACHE},
        ]
        if self._setting("credentials.secretName", str, ""):
            mounts.append({"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
        container: Obj = {
            "name": name,
            "image": image,
            "imagePullPolicy": self._setting("image.pullPolicy", str, "IfNotPresent"),
            "command": command,
            "args": args,
            "env": self._env(),
        }
        if ports:
            container["ports"] = ports
        if resources:
            container["resources"] = resources
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        container["volumeMounts"] = mounts
        return container

    def _pod(
        self,
        sweep: str,
        containers: list[Obj],
        *,
        where: str | None,
        restart_policy: str,
        init_containers: list[Obj] | None = None,
        grace: int | None = None,
    ) -> Obj:
        """A restricted pod spec; `where`: the values section with nodeSelector/tolerations."""
        uid = self._uid()
        pod: Obj = {
            "serviceAccountName": self._service_account_name(sweep),
            "automountServiceAccountToken": False,
            "restartPolicy": restart_policy,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": uid,
                "runAsGroup": uid,
                "fsGroup": uid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
        if grace is not None:
            pod["terminationGracePeriodSeconds"] = grace
        pull_secrets = self._setting("image.pullSecrets", list, [])
        if pull_secrets:
            pod["imagePullSecrets"] = [{"name": str(s)} for s in pull_secrets]
        if where:
            node_selector = self._setting(f"{where}.nodeSelector", dict, {})
            tolerations = self._setting(f"{where}.tolerations", list, [])
            if node_selector:
                pod["nodeSelector"] = node_selector
            if tolerations:
                pod["tolerations"] = tolerations
        if init_containers:
            pod["initContainers"] = init_containers
        pod["containers"] = containers
        volumes: list[Obj] = [
            {"name": "tmp", "emptyDir": {}},
            {"name": "keras-cache", "emptyDir": {}},
        ]
        secret = self._setting("credentials.secretName", str, "")
        if secret:
            volumes.append(
                {"name": "credentials", "secret": {"secretName": secret, "defaultMode": 0o440}}
            )
        pod["volumes"] = volumes
        return pod

    def _failure_rules(self, container: str | None) -> list[Obj]:
        """Disruptions never count; a stopped trainer (143) never counts; exit 2 fails at once.

        The FailJob rule names no container, so that it also covers the init container.
        """
        rules: list[Obj] = [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
        if container:
            rules.append(
                {
                    "action": "Ignore",
                    "onExitCodes": {
                        "containerName": container,
                        "operator": "In",
                        "values": [STOPPED_EXIT_CODE],
                    },
                }
            )
        fail = {"operator": "In", "values": [USER_ERROR_EXIT_CODE]}
        rules.append({"action": "FailJob", "onExitCodes": fail})
        return rules

    def _job(self, name: str, labels: dict[str, str], job_spec: Obj, queued: bool = True) -> Obj:
        meta = self._meta(name, dict(labels))
        queue = self._setting("kueue.queueName", str, "") if queued else ""
        if queue:
            meta["labels"][names.KUEUE_QUEUE_LABEL] = queue
            job_spec = {"suspend": True, **job_spec}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}

    def _deployment(self, name: str, sweep: str, component: str, pod: Obj) -> Obj:
        labels = names.labels(sweep, component)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._meta(name, labels),
            "spec": {
                "replicas": 1,
                # Never two evaluators (or two TensorBoards) on one sweep, even for a moment.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": names.component_selector(sweep, component)},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }


def tuner_args(spec: SweepSpec, options: Options) -> list[str]:
    """The tuner pod's `launcher tune` flags: the laptop's, resolved. The early-stopping rule
    is always given, `none` too, since the pod would otherwise choose asha."""
    budget = [] if options.budget_steps is None else ["--budget-steps", str(options.budget_steps)]
    return [
        "--backend", "kubernetes", "--in-cluster",
        "--data", spec.data, "--out", spec.out, "--name", spec.name,
        *(spec.early_stop_args() or ["--early-stop", "none"]),
        "--threshold", _number(options.threshold),
        "--max-rounds", str(options.max_rounds),
        "--poll-interval", _number(options.poll_interval),
        *budget,
        *spec.trainer_args,
    ]  # fmt: skip


def tuner_values(values: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
    """The values a tuner pod renders with: those of a `helm install` of this tune (the tuner
    enabled; data, out, name and trainer flags resolved; no lrs). Nulls are left out: they mean
    "unset" to both (helm 3 keeps values.yaml's nulls, helm 4 drops them)."""
    out = {
        **values,
        "data": spec.data,
        "out": spec.out,
        "name": spec.name,
        "trainerArgs": list(spec.trainer_args),
        "tuner": {**(values.get("tuner") or {}), "enabled": True},
    }
    out.pop("lrs", None)
    return _without_nulls(out)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def worker_hosts(job: str) -> str:
    """The trainer's --worker-hosts for the pods of an Indexed Job behind its headless Service
    of the same name: worker i is <job>-<i>.<job> (hostname.subdomain) on WORKER_PORT."""
    return f"{job}-{{index}}.{job}:{WORKER_PORT}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def to_yaml(objs: list[Obj]) -> str:
    """Multi-document YAML for `kubectl apply -f -`."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: plain, diffable YAML
            return True

    return yaml.dump_all(
        objs, Dumper=Dumper, sort_keys=False, default_flow_style=False, explicit_start=True
    )

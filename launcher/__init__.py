"""Launch learning-rate sweeps: on this machine as processes, or on Kubernetes as objects.

    python -m launcher sweep --data URI --out URI --lrs 0.1,0.01,0.001 [--backend local|kubernetes]
    python -m launcher preprocess --train-dir URI --val-dir URI --out URI [--tasks K]
    python -m launcher status --sweep URI [--backend kubernetes]
    python -m launcher refine --sweep URI [--launch]
    python -m launcher delete --sweep NAME
    python -m launcher record-sweep ...          (what trainer pods run first; see launcher.record)

It imports common (storage, layout, manifest, args, cli), never the trainer, the evaluator,
preprocess or TensorFlow: `--help` answers in a fraction of a second, and the kubernetes client
and YAML load only in the commands that use them.

Decisions, and why
------------------
- Settings are the Helm chart's values (charts/inception-finetune/values.yaml, `-f` files,
  a few flags such as --gpus), checked by the chart's values.schema.json: the launcher and
  `helm template` render the same objects from the same inputs (launcher.objects).
- sweep.json is written by launcher.record: client side before anything starts, and by an
  init container of every trainer pod (`record-sweep`), so a helm install has one too. It is
  a union under a compare-and-swap: the same sweep again changes nothing, a refine appends,
  another dataset or other trainer flags are refused. Because the candidates are recorded per
  Job, the sweep-wide objects (evaluator, TensorBoard, ServiceAccount) do not depend on the
  list of lrs: a refine, or a helm upgrade with more lrs, only adds Jobs.
- The early-stopping rule (--early-stop, --grace, --eta; values earlyStop.*) is part of
  sweep.json, where the evaluator reads it; record-sweep init containers carry its flags only
  when a rule is set, so sweeps without one render the objects they always did. A sweep keeps
  the rule it was launched with (another one is a conflict, like other trainer flags).
- Kubernetes apply is create-or-compare (launcher.apply): a spec hash annotation makes a second
  launch of the same sweep a no-op and a different spec under an existing name one sentence,
  found before anything is created. Nothing is ever updated in place.
- --dry-run renders from the arguments only: it contacts neither the bucket nor the cluster.
- The local backend runs every candidate of sweep.json that is not complete, --parallel at a
  time, plus one evaluator; Ctrl-C stops them the way an eviction would (launcher.local).
- --workers N (values trainer.workers) trains each run with N workers together: on a cluster
  an Indexed Job of N pods behind a headless Service of the Job's name, retries per worker
  (launcher.objects says why); locally N processes on free 127.0.0.1 ports. The count is not
  in sweep.json (it is not a trainer flag of the sweep, and a refine may use another).
- Kubernetes objects need 1.31 or newer (Job podFailurePolicy GA); they are validated with
  kubernetes-validate --strict for 1.31 and 1.37.
"""

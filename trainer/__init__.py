"""Fine-tune Keras' ImageNet-pretrained Inception-v3 on a dataset written by `python -m preprocess`.

    python -m trainer --data URI --run-dir URI [--lr F] [--batch-size N] [--steps N | --epochs N]
                      [--image-size PX] [--fine-tune all|head] [--weights imagenet|none|URI]
                      [--checkpoint-every STEPS] [--metrics-port N] ...   (--help for all)

URIs are local paths or gs://; TensorFlow reads and writes them directly. Started again on the
same run directory, the trainer resumes; it never deletes one.

Contract with the evaluator (and anyone reading a run directory)
----------------------------------------------------------------
run-dir/hparams.json
    Written before the first step. Every hyperparameter (the `hparam` fields of
    trainer.config.TrainConfig: "data", "image_size", "lr", "batch_size", "steps", "epochs",
    "fine_tune", "head_warmup_steps", "head_init", "weights", "dropout", "optimizer", "momentum",
    "rmsprop_rho", "rmsprop_epsilon", "lr_schedule", "lr_decay_factor", "lr_decay_epochs",
    "warmup_epochs", "label_smoothing", "weight_decay", "precision", "seed") plus what rebuilds
    the model and sizes the run: "num_classes", "labels" (class i = labels[i]), "label_offset",
    "dataset", "train_examples", "steps_per_epoch", "created", "format"
    ("inception-finetune-run/1"), and "changes" (hyperparameters changed with --force: when,
    from which step, old and new values). "data" is normalised (absolute path or gs://...).
run-dir/checkpoints/
    tf.train.CheckpointManager files, checkpoint_name "ckpt", numbered by the global step:
    `ckpt-<step>.index`, `ckpt-<step>.data-*` and the `checkpoint` state file; the newest
    --keep-checkpoints are kept. Checkpoint object:
    `tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_variable)`, so
        model = common.model.build_classifier(hparams["num_classes"], hparams["image_size"])
        tf.train.Checkpoint(model=model).read(path).expect_partial()
    restores the weights (the step is `step/.ATTRIBUTES/VARIABLE_VALUE` in the checkpoint).
run-dir/train/
    TensorBoard events: scalars "loss" (cross-entropy plus weight penalty), "learning_rate",
    "examples_per_sec" every --log-every steps; "inputs", a few augmented training images.
run-dir/ (the root)
    One event file holding the TensorBoard HParams record of the run (written when a run
    starts or its hyperparameters change). It sits at the root, the parent of train/ and of
    the evaluator's eval/, because TensorBoard's HParams tab takes a run's metrics from the
    event directories under the one holding its record: it then shows train/loss and the
    evaluator's eval/ scalars next to each run's hyperparameters.
run-dir/export/
    SavedModel from common.export.export_model, written when training finished:
    `serving_default(image_bytes: string [N]) -> {"probabilities": float32 [N, C],
    "labels": string [N, C]}`, plus labels.txt.
run-dir/complete.json
    Written last, after the export: {"final_step", "finished" (UTC ISO time), "export",
    "examples_per_sec"}. Its absence means the run is unfinished (running, stopped or died).
    A run stopped early has no export and says why: {"final_step" (its last checkpoint),
    "finished", "stopped": {"by": "evaluator"|"trainer", "rule", "step", "reason"},
    "examples_per_sec"}; a restart on it does nothing.
run-dir/stop.json
    A verdict of the sweep's early-stopping rule (common.early_stop): this trainer's own at a
    rung ("by": "trainer", trainer.rungs), or the evaluator's for runs without rungs. The
    trainer looks for it at every checkpoint and, from a background thread, every few
    seconds; then it saves, writes complete.json and exits 0. A NaN or infinite loss stops a
    run the same way (rule "nan"), without saving the non-finite state.
run-dir/eval/results/step-N.json
    In a sweep with a rule, the result of each rung checkpoint, scored by this trainer on its
    own device ("scored_by": "trainer"), created only if absent (common.results); hparams.json
    lists the rungs (`rungs`) before step 1.

Resuming: the latest checkpoint restores the model, the optimizer and the step counter; the
learning-rate schedule is a function of that step. Flags not given take the saved values; a
given flag that contradicts a saved hyperparameter is an error unless --force. SIGTERM (a pod's
eviction) saves a checkpoint after the current step and exits 0; SIGINT the same, exit 130.

Prometheus (--metrics-port), label `run` (the run directory's name):
finetune_train_steps_total, finetune_train_examples_total, finetune_train_global_step,
finetune_train_target_steps, finetune_train_loss, finetune_train_learning_rate,
finetune_train_examples_per_second, finetune_train_step_duration_seconds (histogram),
finetune_checkpoint_save_seconds (histogram), finetune_checkpoint_last_step,
finetune_rung_eval_seconds (histogram: the validation pass at each rung).
"""

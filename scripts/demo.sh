#!/usr/bin/env bash
# The main job end to end on the embedded defaults: a local folder as the bucket, local processes.
# Makes a small sample image folder from photos scikit-image ships, preprocesses it into
# TFRecords, fine-tunes briefly on it, evaluates every checkpoint, and predicts one image.
# Running it again resumes: nothing finished is redone or deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
PY=.venv/bin/python
OUT=${OUT:-out/demo}
BUCKET=$OUT/bucket
DATA=$BUCKET/datasets/sample
SWEEP=$BUCKET/sweeps/demo
RUN=$SWEEP/runs/lr-0.001
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

say() { printf '\n== %s\n' "$*" >&2; }

say "1/5 sample images: $OUT/images"
$PY -m preprocess sample --out "$OUT/images"

say "2/5 preprocess into TFRecords: $DATA"
$PY -m preprocess --train-dir "$OUT/images/train" --val-dir "$OUT/images/val" --out "$DATA"

say "3/5 fine-tune: $RUN"
WEIGHTS=imagenet
if ! $PY -c "from trainer.weights import resolve; resolve('imagenet')" >/dev/null 2>&1; then
  echo "The ImageNet weights are unreachable (no internet?): training from random weights instead." >&2
  WEIGHTS=none
fi
# Small images and a short run, so that it takes a minute or two on a laptop's CPU.
$PY -m trainer --data "$DATA" --run-dir "$RUN" --weights "$WEIGHTS" --image-size 80 \
  --batch-size 16 --steps 100 --optimizer adam --lr 0.001 --checkpoint-every 25

say "4/5 evaluate every checkpoint, rank the runs, export the best"
$PY -m evaluator --sweep-dir "$SWEEP" --interval 1

say "5/5 predict one validation image with the best model"
BEST=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['best']['export'])" "$SWEEP/leaderboard.json")
IMAGE=$(find "$OUT/images/val" -type f ! -name '.*' | sort | head -n 1)
$PY -m evaluator predict --model "$BEST" --top-k 3 "$IMAGE"

cat >&2 <<MSG

Done. The run:           $RUN (checkpoints/, export/, hparams.json)
TensorBoard events:      $RUN/train and $RUN/eval  ->  .venv/bin/tensorboard --logdir $SWEEP
Leaderboard, best model: $SWEEP/leaderboard.json, $BEST
MSG

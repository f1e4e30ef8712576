#!/usr/bin/env bash
# The main job end to end on the embedded defaults: a local folder as the bucket, local processes.
# Makes a small sample image folder from photos scikit-image ships, preprocesses it into
# TFRecords, fine-tunes briefly on it, evaluates the run and predicts one image.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
PY=.venv/bin/python
OUT=${OUT:-out/demo}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

$PY -m preprocess sample --out "$OUT/images"
$PY -m preprocess --train-dir "$OUT/images/train" --val-dir "$OUT/images/val" \
  --out "$OUT/bucket/datasets/sample"

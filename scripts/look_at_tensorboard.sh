#!/usr/bin/env bash
# Looks at a sweep in TensorBoard as a person does, with a real headless browser: starts
# TensorBoard on the sweep dir, then has chromium render the HParams, Images and Time Series
# tabs to PNG screenshots, for a person or a reviewer to read.
#
#   bash scripts/look_at_tensorboard.sh [SWEEP_DIR] [OUT_DIR]
#       SWEEP_DIR  default out/demo/bucket/sweeps/demo (what scripts/demo.sh makes)
#       OUT_DIR    default out/tensorboard-views
#
# Needs chromium (Debian: apt-get install -y chromium). Prints what it checked: the HParams
# tab's columns are the hyperparameters (no timestamps or bookkeeping), and the confusion-matrix
# images are there for a person to see that they name the classes.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${1:-out/demo/bucket/sweeps/demo}
out=${2:-out/tensorboard-views}
port=${PORT:-16006}
command -v chromium >/dev/null || { echo "look_at_tensorboard.sh: chromium is not installed (apt-get install -y chromium)." >&2; exit 1; }
[ -d "$sweep" ] || { echo "look_at_tensorboard.sh: no sweep at $sweep (run bash scripts/demo.sh first)." >&2; exit 1; }
mkdir -p "$out"

.venv/bin/tensorboard --logdir "$sweep" --host 127.0.0.1 --port "$port" >"$out/tensorboard.log" 2>&1 &
tb=$!
trap 'kill $tb 2>/dev/null || true' EXIT
for _ in $(seq 60); do
  curl -fs "http://127.0.0.1:$port/data/runs" >/dev/null 2>&1 && break
  sleep 1
done
curl -fs "http://127.0.0.1:$port/data/runs" >/dev/null || { echo "TensorBoard did not answer (see $out/tensorboard.log)." >&2; exit 1; }

browse() {  # tab -> screenshot (and, for hparams, the rendered page's text)
  chromium --headless=new --no-sandbox --disable-gpu --window-size=1500,1000 \
    --virtual-time-budget=15000 "$@" 2>/dev/null
}
for tab in hparams images timeseries; do
  browse --screenshot="$out/$tab.png" "http://127.0.0.1:$port/#$tab" >/dev/null
  echo "screenshot: $out/$tab.png"
done
# What the HParams tab lists (its table and filters), as TensorBoard answers the page: the
# rendered page keeps its text in shadow DOM, out of reach of chromium's --dump-dom.
curl -fs -X POST -H "Content-Type: application/json" -d '{"experimentName": ""}' \
  "http://127.0.0.1:$port/data/plugin/hparams/experiment" >"$out/hparams.json"
python3 - "$out/hparams.json" <<'PY'
import json
import sys

names = [info["name"] for info in json.load(open(sys.argv[1]))["hparamInfos"]]
bookkeeping = {"created", "finished", "format", "train_examples", "changes", "labels", "run"}
print("HParams tab lists:", ", ".join(names))
if not {"lr", "batch_size", "optimizer"} <= set(names) or bookkeeping & set(names):
    sys.exit(f"the HParams tab is not hyperparameters only: {sorted(bookkeeping & set(names))}")
print("HParams: hyperparameters only (no timestamps or bookkeeping)")
PY

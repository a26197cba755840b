#!/usr/bin/env bash
# make demo: shapes data (if missing) -> train -> evaluate on test and novel -> report and best checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN=runs/shapes

if [ ! -f data/shapes/train/metadata.jsonl ]; then
  $BIN/captioning make-shapes --out data/shapes --seed 0
fi

start=$(date +%s)
$BIN/captioning fit --config configs/shapes.yaml
echo "training took $(( $(date +%s) - start )) s (feature caching included)"

$BIN/captioning evaluate --checkpoint "$RUN/checkpoints/best.ckpt" --root data/shapes --splits '[test, novel]'
echo
echo "report:          $RUN/report.html"
echo "best checkpoint: $RUN/checkpoints/best.ckpt"

#!/usr/bin/env bash
# make demo: shapes data (if missing) -> train -> evaluate on test and novel -> report and best checkpoint.
# Each run gets its own folder, runs/shapes/version_<N>/; runs/shapes/latest points at the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN=runs/shapes/latest

if [ ! -f data/shapes/train/metadata.jsonl ]; then
  $BIN/captioning make-shapes --out data/shapes --seed 0
fi

start=$(date +%s)
$BIN/captioning fit --config configs/shapes.yaml
echo "training took $(( $(date +%s) - start )) s (feature caching included)"

$BIN/captioning evaluate --checkpoint "$RUN/checkpoints/best.ckpt" --root data/shapes --splits '[test, novel]'
echo
echo "run folder:      $(readlink -f "$RUN")"
echo "report:          $RUN/report.html"
echo "best checkpoint: $RUN/checkpoints/best.ckpt"

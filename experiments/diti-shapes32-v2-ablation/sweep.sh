#!/bin/bash
# Trains ablation rows one after the other through a list of budgets, keeping the final pipeline of each budget:
#   bash experiments/diti-shapes32-v2-ablation/sweep.sh DDPM_DIR RUN_ROOT "IMAGES [IMAGES ...]" ROW [ROW ...]
# e.g. sweep.sh /work/runs/ddpm-13000 /work/runs/ablation "32000 64000" uniform pdae auto dual d32k8
# writes RUN_ROOT/ROW (the resumable run) and RUN_ROOT/ROW-IMAGES (a copy of its pipeline at that budget). The lr is
# constant after warm-up, so each budget continues the previous one; a row whose copy exists is skipped, so the
# sweep can be restarted after an interruption (the run itself resumes from its latest checkpoint).
set -e
DDPM=$1; ROOT=$2; BUDGETS=$3; shift 3
HERE=$(dirname "$0")
for ROW in "$@"; do
  for IMAGES in $BUDGETS; do
    OUT="$ROOT/$ROW-$IMAGES"
    [ -f "$OUT/model_index.json" ] && continue
    echo "=== $(date -u +%FT%TZ) $ROW to $IMAGES images"
    bash "$HERE/train.sh" "$ROW" "$DDPM" "$ROOT" "$IMAGES"
    rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
    (cd "$ROOT/$ROW" && cp -r $(ls | grep -v '^checkpoint-\|^logs$') "$OUT.tmp/")
    mv "$OUT.tmp" "$OUT"
    echo "=== $(date -u +%FT%TZ) $ROW at $IMAGES images: $OUT"
  done
done

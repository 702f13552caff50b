#!/bin/bash
# Single-process training throughput of small32 DiTi (uniform row) for each lever, one after the other:
#   bash experiments/gpu-recipe/throughput.sh OUT_DIR [SECONDS_PER_CONFIG]          (from the repository root)
# Configs: batch 256 and 1024 × eager / --compile × data-loader workers / --dataset_on_device. Each runs
# SECONDS_PER_CONFIG [45] of wall time (start-up and compilation included; the summary's images/s counts only the
# training steps). One line per config is appended to OUT_DIR/throughput.tsv as soon as it ends.
set -u
OUT_DIR=$1; SECONDS_PER=${2:-45}
mkdir -p "$OUT_DIR"
WORK=${WORK:-/tmp/gpu-throughput}
export WORK NUM_IMAGES=${NUM_IMAGES:-50000}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
bash "$(dirname "$0")/data.sh" "$WORK" "$NUM_IMAGES" "$PYTHON" > /dev/null || exit 1
MINUTES=$(awk -v s="$SECONDS_PER" 'BEGIN { print s / 60 }')
[ -f "$OUT_DIR/throughput.tsv" ] || echo -e "batch\tcompile\ton_device\tsteps\timages_per_s" > "$OUT_DIR/throughput.tsv"
for BATCH in 256 1024; do
  for COMPILE in 0 1; do
    for ON_DEVICE in 0 1; do
      NAME="b$BATCH-c$COMPILE-d$ON_DEVICE"
      rm -rf "$WORK/uniform"
      BATCH=$BATCH COMPILE=$COMPILE ON_DEVICE=$ON_DEVICE THREADS=4 WORKERS=6 \
        bash "$(dirname "$0")/run.sh" "$WORK/out-$NAME" "$MINUTES" uniform > /dev/null 2>&1
      SUMMARY="$WORK/uniform/training_summary.json"
      $PYTHON -c "
import json, sys
s = json.load(open(sys.argv[1]))
print('\t'.join([sys.argv[2], sys.argv[3], sys.argv[4], str(s['global_step']), str(s['throughput_images_per_s'])]))
" "$SUMMARY" "$BATCH" "$COMPILE" "$ON_DEVICE" >> "$OUT_DIR/throughput.tsv" 2>/dev/null \
        || echo -e "$BATCH\t$COMPILE\t$ON_DEVICE\tfailed\t-" >> "$OUT_DIR/throughput.tsv"
    done
  done
done
cat "$OUT_DIR/throughput.tsv"

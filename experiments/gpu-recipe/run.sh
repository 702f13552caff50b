#!/bin/bash
# Trains ablation rows side by side on one machine within a wall-time budget, exporting each row as soon as it ends:
#   bash experiments/gpu-recipe/run.sh OUT_DIR MINUTES ROW [ROW ...]        (from the repository root)
# ROW: one of experiments/diti-shapes32-v2-ablation/rows.sh's ROWS. Each row gets `--max_train_minutes` of what is
# left of MINUTES once the data set exists, so the recipe exits within MINUTES + 2. OUT_DIR receives, as each row
# ends, ROW.tgz (its pipeline folder without the frozen UNet, with its train.log) and a line in throughput.log.
# Environment (defaults in brackets): DDPM [experiments/ddpm-shapes32-v3/small32-v-40000], IMAGES (a cap on images
# per row, e.g. 768000 for equal budgets) [none: the time budget decides], BATCH [256], NUM_IMAGES (training set)
# [50000], WORKERS (data loader workers per row) [3], THREADS (torch threads per row) [2], PRECISION [bf16 on a GPU, else no],
# ON_DEVICE=1 (hold the data set on the device: --dataset_on_device, no workers), COMPILE=1 (--compile),
# WORK (runs and the cached data set) [/tmp/gpu-recipe], PYTHON [.venv/bin/python, else python3].
set -u
OUT_DIR=$1; MINUTES=$2; shift 2
[ $# -ge 1 ] || { echo "usage: run.sh OUT_DIR MINUTES ROW [ROW ...]" >&2; exit 2; }
START=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../diti-shapes32-v2-ablation/rows.sh"
for ROW in "$@"; do row_flags "$ROW" >/dev/null || exit 2; done
DDPM=${DDPM:-experiments/ddpm-shapes32-v3/small32-v-40000}
WORK=${WORK:-/tmp/gpu-recipe}; BATCH=${BATCH:-256}; NUM_IMAGES=${NUM_IMAGES:-50000}
WORKERS=${WORKERS:-3}; THREADS=${THREADS:-2}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if [ -z "${PRECISION:-}" ]; then
  PRECISION=$($PYTHON -c "import torch; print('bf16' if torch.cuda.is_available() else 'no')")
fi
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$THREADS PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR" "$WORK"
log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$OUT_DIR/throughput.log"; }

# The procedural set, generated once for every row (the same images each row would generate itself: seed 0).
DATA=$(bash "$HERE/data.sh" "$WORK" "$NUM_IMAGES" "$PYTHON") || { log "data set generation failed"; exit 1; }
BUDGET=$(awk -v m="$MINUTES" -v s="$(( $(date +%s) - START ))" 'BEGIN { b = m - s / 60 - 0.25; print (b > 0.05 ? b : 0.05) }')
log "data set ready after $(( $(date +%s) - START )) s; each row trains for at most $BUDGET min: $*"

EXTRA=()
# without IMAGES the time budget alone ends a row (a step cap no run reaches, instead of the default one epoch)
if [ -n "${IMAGES:-}" ]; then EXTRA+=(--max_train_images "$IMAGES"); else EXTRA+=(--max_train_steps 1000000000); fi
[ "${ON_DEVICE:-0}" = 1 ] && EXTRA+=(--dataset_on_device) && WORKERS=0
[ "${COMPILE:-0}" = 1 ] && EXTRA+=(--compile)
for ROW in "$@"; do
  (
    RUN="$WORK/$ROW"
    timeout -k 20 "$(awk -v m="$MINUTES" 'BEGIN { print int(m * 60 + 90) }')" \
      $PYTHON examples/train_diti.py --pretrained_unet "$DDPM" --dataset_name "$DATA" --num_train_images "$NUM_IMAGES" \
      --resolution 32 --encoder_preset small32 $(row_flags "$ROW") --train_batch_size "$BATCH" "${EXTRA[@]}" \
      --max_train_minutes "$BUDGET" --learning_rate 5e-4 --lr_scheduler constant_with_warmup --lr_warmup_steps 200 \
      --ema_decay 0.999 --validation_steps 0 --seed 0 --num_threads "$THREADS" --mixed_precision "$PRECISION" \
      --allow_tf32 --checkpointing_steps 500 --checkpoints_total_limit 1 --dataloader_num_workers "$WORKERS" \
      --report_to none --output_dir "$RUN" --resume_from_checkpoint latest > "$WORK/$ROW.log" 2>&1
    RC=$?
    if [ -f "$RUN/model_index.json" ]; then
      cp "$WORK/$ROW.log" "$RUN/train.log"
      tar czf "$OUT_DIR/$ROW.tgz.tmp" -C "$WORK" --exclude="$ROW/unet" --exclude="$ROW/checkpoint-*" \
        --exclude="$ROW/logs" --exclude="$ROW/.lock" "$ROW" && mv "$OUT_DIR/$ROW.tgz.tmp" "$OUT_DIR/$ROW.tgz"
    fi
    log "$ROW exit $RC: $(grep -h 'images seen' "$WORK/$ROW.log" | tail -n 1)"
    [ $RC -eq 0 ] || tail -n 5 "$WORK/$ROW.log" >> "$OUT_DIR/throughput.log"
  ) &
done
wait
log "done after $(( $(date +%s) - START )) s"

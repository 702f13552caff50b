#!/bin/bash
# Writes the EMA DDPMPipeline of checkpoint STEP of a row's RUN_DIR to OUT_DIR without touching the run (a copy of the
# checkpoint is resumed at its own step, which ends that copy at once and saves the final folder).
#   ROW=wide8 bash experiments/ddpm-shapes32-v3/export.sh RUN_DIR STEP OUT_DIR
set -e
ROW=${ROW:?set ROW}
source "$(dirname "$0")/rows.sh"
RUN_DIR=$1; STEP=$2; OUT=$3
rm -rf "$OUT"; mkdir -p "$OUT"; cp -r "$RUN_DIR/checkpoint-$STEP" "$OUT/"
# shellcheck disable=SC2086
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python examples/train_ddpm.py --dataset_name diti-shapes-v2 \
  --num_train_images 50000 --output_dir "$OUT" $ROW_FLAGS --train_batch_size 32 --max_train_steps "$STEP" \
  --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 500 --ema_decay 0.999 --num_threads 1 \
  --checkpointing_steps 250 --validation_steps 0 --num_validation_images 4 --seed 0 --resume_from_checkpoint latest \
  --report_to none
rm -rf "$OUT/checkpoint-$STEP"

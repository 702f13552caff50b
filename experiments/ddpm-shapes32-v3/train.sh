#!/bin/bash
# One row of the base-DDPM capacity comparison (same data, schedule, seed as experiments/ddpm-shapes32-v2), resumable.
# Run from the repository root:
#   ROW=wide8 bash experiments/ddpm-shapes32-v3/train.sh RUN_DIR
# THREADS=1 (default) when another job shares the cores.
set -e
ROW=${ROW:?set ROW to small32, wide8 or wide8-4x4}
source "$(dirname "$0")/rows.sh"
RUN_DIR=${1:?RUN_DIR}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS HF_HUB_OFFLINE=1
# shellcheck disable=SC2086
exec nice -n 5 .venv/bin/python examples/train_ddpm.py --dataset_name diti-shapes-v2 --num_train_images 50000 \
  --output_dir "$RUN_DIR" $ROW_FLAGS --train_batch_size 32 --max_train_steps 40000 \
  --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 500 --ema_decay 0.999 --num_threads "$THREADS" \
  --checkpointing_steps 250 --checkpoints_total_limit 3 --validation_steps 0 --seed 0 \
  --resume_from_checkpoint latest

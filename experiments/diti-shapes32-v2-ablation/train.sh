#!/bin/bash
# One row of the equal-budget ablation on the diti-shapes-v2 base DDPM (one thread, resumable). From the repo root:
#   bash experiments/diti-shapes32-v2-ablation/train.sh ROW DDPM_DIR RUN_ROOT [IMAGES]
# ROW: one of rows.sh's ROWS. IMAGES (default 320000 = 10,000 steps of 32) is the budget; every row of
# one budget gets the same number, the same seed, data and DDPM; a constant lr after warm-up, so a longer budget
# continues a shorter run (--resume_from_checkpoint latest with a larger IMAGES) without refitting a schedule.
set -e
ROW=$1; DDPM=$2; ROOT=${3:-/work/runs/ablation}; IMAGES=${4:-320000}
source "$(dirname "$0")/rows.sh"
ROW_FLAGS=$(row_flags "$ROW")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
exec nice -n 5 .venv/bin/python examples/train_diti.py --pretrained_unet "$DDPM" --dataset_name diti-shapes-v2 \
  --num_train_images 50000 --resolution 32 --encoder_preset small32 $ROW_FLAGS \
  --train_batch_size 32 --max_train_images "$IMAGES" --learning_rate 5e-4 --lr_scheduler constant_with_warmup \
  --lr_warmup_steps 200 --ema_decay 0.999 --num_threads 1 --checkpointing_steps 250 --checkpoints_total_limit 2 \
  --validation_steps 0 --seed 0 --output_dir "$ROOT/$ROW" --resume_from_checkpoint latest

#!/bin/bash
# The base DDPM of diti-shapes-v2 (issue: a strong base DDPM), one thread, resumable. Run from the repository root:
#   bash experiments/ddpm-shapes32-v2/train.sh RUN_DIR
# RUN_DIR (default /work/runs/ddpm-shapes32-v2) holds the checkpoints; to continue from the checkpoint committed here,
# copy it in first: mkdir -p RUN_DIR && cp -r experiments/ddpm-shapes32-v2/checkpoint-* RUN_DIR/
set -e
RUN_DIR=${1:-/work/runs/ddpm-shapes32-v2}
THREADS=${THREADS:-1}  # intra-op threads; 1 when another job shares the cores
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS HF_HUB_OFFLINE=1
exec nice -n 5 .venv/bin/python examples/train_ddpm.py --dataset_name diti-shapes-v2 --num_train_images 50000 \
  --output_dir "$RUN_DIR" --unet_preset small32 --train_batch_size 32 --max_train_steps 40000 \
  --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 500 --ema_decay 0.999 --num_threads "$THREADS" \
  --checkpointing_steps 250 --checkpoints_total_limit 3 --validation_steps 0 --seed 0 \
  --resume_from_checkpoint latest

#!/bin/bash
# The full report of the ablation rows (the acceptance protocol: the pipeline's own swap with its defaults, 20 DDIM
# steps, the four quarter ranges and the two halves, >= 48 pairs, an oracle trained on 3,600 ground-truth images).
#   bash experiments/diti-shapes32-v2-ablation/evaluate.sh REPORT_DIR NAME=PIPELINE_DIR [NAME=PIPELINE_DIR ...]
set -e
OUT=$1; shift
MODELS=(); for m in "$@"; do MODELS+=(--model "$m"); done
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python examples/evaluate.py "${MODELS[@]}" \
  --shapes_dataset diti-shapes-v2 --output_dir "$OUT" --num_images 6000 --seed 2 --num_inference_steps 20 \
  --timesteps 0 250 --timesteps 250 500 --timesteps 500 750 --timesteps 750 1000 --timesteps 0 500 --timesteps 500 1000 \
  --num_swap_pairs 64 --num_reconstruction_images 32

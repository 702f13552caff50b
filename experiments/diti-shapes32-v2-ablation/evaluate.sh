#!/bin/bash
# The full report of the ablation rows (the acceptance protocol: the pipeline's own swap with its defaults, 20 DDIM
# steps, the four quarter ranges and the two halves, >= 48 pairs, an oracle trained on 3,600 ground-truth images).
#   bash experiments/diti-shapes32-v2-ablation/evaluate.sh REPORT_DIR NAME=PIPELINE_DIR [NAME=PIPELINE_DIR ...] [-- FLAGS]
# FLAGS go to examples/evaluate.py as they are, e.g. `-- --no_loss_profile --no_attribute_loss --swap_protocols` to
# skip the diagnostics of the shared DDPM and the alternative swap protocols (none of them enters the targets).
set -e
OUT=$1; shift
MODELS=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do MODELS+=(--model "$1"); shift; done
[ "$1" = "--" ] && shift
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python examples/evaluate.py "${MODELS[@]}" \
  --shapes_dataset diti-shapes-v2 --output_dir "$OUT" --num_images 6000 --seed 2 --num_inference_steps 20 \
  --timesteps 0 250 --timesteps 250 500 --timesteps 500 750 --timesteps 750 1000 --timesteps 0 500 --timesteps 500 1000 \
  --num_swap_pairs 64 --num_reconstruction_images 32 "$@"

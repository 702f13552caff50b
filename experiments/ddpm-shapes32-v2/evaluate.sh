#!/bin/bash
# Loss times, loss profile and sample validity (with the real-image ceiling) of an exported DDPM folder.
#   bash experiments/ddpm-shapes32-v2/evaluate.sh DDPM_DIR REPORT_DIR [more examples/evaluate.py flags, e.g. --sample_eta 1]
# 6,000 images: the oracle trains on 60 % of them; at the default 3,000 it reads `shape` confidently on only 65 % of
# held-out real images (benchmarks/results/ddpm.md, "First: the oracle must be trained on enough images"), which
# would cap the validity score.
set -e
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python examples/evaluate.py --model ddpm="$1" \
  --shapes_dataset diti-shapes-v2 --output_dir "$2" --num_images 6000 --num_attribute_loss_images 128 \
  --num_validity_samples 128 --no_random_baseline --no_pixel_baseline --seed 1 "${@:3}"

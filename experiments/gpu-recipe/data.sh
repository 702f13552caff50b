#!/bin/bash
# Generates the diti-shapes-v2 training set once (seed 0, the images every row would generate itself) and prints
# its folder:  bash experiments/gpu-recipe/data.sh WORK NUM_IMAGES [PYTHON]
set -eu
WORK=$1; NUM_IMAGES=$2; PYTHON=${3:-python3}
DATA="$WORK/diti-shapes-v2-$NUM_IMAGES"
if [ ! -f "$DATA/state.json" ]; then
  mkdir -p "$WORK"
  rm -rf "$DATA.tmp"
  $PYTHON -c "
import sys
from diti_hf.data import load_image_dataset
load_image_dataset('diti-shapes-v2', num_images=int(sys.argv[1]), seed=0).save_to_disk(sys.argv[2])
" "$NUM_IMAGES" "$DATA.tmp" >&2
  mv "$DATA.tmp" "$DATA"
fi
echo "$DATA"

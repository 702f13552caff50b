#!/bin/bash
# The ablation rows' flags, one place for every script that trains them (source this file, then `row_flags ROW`).
# Every row has d = 64 and k = 16 unless it names otherwise; only the named lever differs from `uniform`, or, for the
# rows ending in `-interval`, from `interval`.
ROWS="uniform interval auto auto-interval dual base d32k8 early4 early4-interval lossnorm lossnorm-interval pdae"
row_flags() {
  local DITI="--latent_dim 64 --num_chunks 16 --mode stop_grad"
  local EARLY4="--stages 250 500 750 1000 --dims_per_stage 4 12 20 28"
  local AUTO="--partition auto --loss_profile_images 256"
  case $1 in
    uniform)           echo "$DITI" ;;
    interval)          echo "$DITI --mask_mode interval" ;;
    auto)              echo "$DITI $AUTO" ;;
    auto-interval)     echo "$DITI $AUTO --mask_mode interval" ;;
    dual)              echo "--latent_dim 64 --num_chunks 16 --mode dual" ;;
    base)              echo "--latent_dim 64 --num_chunks 16 --mode base" ;;
    d32k8)             echo "--latent_dim 32 --num_chunks 8 --mode stop_grad" ;;
    early4)            echo "$DITI $EARLY4" ;;
    early4-interval)   echo "$DITI $EARLY4 --mask_mode interval" ;;
    lossnorm)          echo "$DITI --loss_weighting interval" ;;
    lossnorm-interval) echo "$DITI --loss_weighting interval --mask_mode interval" ;;
    pdae)              echo "--latent_dim 64 --num_chunks 1 --mode stop_grad" ;;
    *) echo "unknown row $1 ($ROWS)" >&2; return 2 ;;
  esac
}

# The UNet and the prediction target (ε unless -v: v) of each row; everything else is the recipe of experiments/ddpm-shapes32-v2 (small32 = its row).
# Sourced by train.sh and export.sh: sets ROW_FLAGS from ROW.
case "$ROW" in
  small32) ROW_FLAGS="--unet_preset small32" ;;                                               # 1.11M parameters
  wide8) ROW_FLAGS="--unet_preset small32 --block_out_channels 32 64 128 --attention_levels 2" ;;  # 2.74M
  wide8-4x4) ROW_FLAGS="--unet_preset small32 --block_out_channels 32 64 128 128 --attention_levels 2 3" ;;  # 4.53M
  small32-v) ROW_FLAGS="--unet_preset small32 --prediction_type v_prediction" ;;                  # 1.11M, predicts v
  wide8-v) ROW_FLAGS="--unet_preset small32 --block_out_channels 32 64 128 --attention_levels 2 --prediction_type v_prediction" ;;  # 2.74M, v
  *) echo "ROW: '$ROW' is not one of small32, wide8, wide8-4x4, small32-v, wide8-v" >&2; exit 2 ;;
esac

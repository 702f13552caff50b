"""Training DiTi: the loss, EMA, crash-safe checkpoints, logging helpers and the pieces the example scripts share."""

from .checkpointing import (
    CheckpointError,
    UntrustedCheckpointError,
    checkpoint_problems,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_file,
    prune_checkpoints,
    remove_incomplete_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    save_state_file,
)
from .ema import ConstantDecayEMAModel, make_ema
from .logging_utils import ThroughputMeter, TimestepLossHistogram, image_grid, parameter_fingerprint, peak_memory_mb
from .loss import (
    LOSS_MODES,
    LOSS_WEIGHTINGS,
    DiTiLossOutput,
    IntervalLossNormalizer,
    condition_for_timesteps,
    diti_loss,
)

__all__ = [
    "LOSS_MODES",
    "LOSS_WEIGHTINGS",
    "IntervalLossNormalizer",
    "CheckpointError",
    "ConstantDecayEMAModel",
    "DiTiLossOutput",
    "ThroughputMeter",
    "TimestepLossHistogram",
    "UntrustedCheckpointError",
    "checkpoint_problems",
    "condition_for_timesteps",
    "diti_loss",
    "image_grid",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_state_file",
    "make_ema",
    "parameter_fingerprint",
    "peak_memory_mb",
    "prune_checkpoints",
    "remove_incomplete_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_state_file",
]

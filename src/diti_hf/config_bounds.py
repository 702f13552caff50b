"""The bounds of the size fields of a model or scheduler config, checked before anything is built from it: a config
may come from anyone, and its numbers decide how much memory and time everything after costs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .safe_io import short_repr
from .sampling import MAX_TRAIN_TIMESTEPS

# Far above any image size DiTi is trained at (64, 128, 256), far below one whose activations exhaust a machine.
MAX_SAMPLE_SIZE = 4096
_MAX_WIDTH = 2**16

# Integer config fields and their upper bounds (each must be an int in [1, bound] where set).
_BOUNDED_INTS = {
    "sample_size": MAX_SAMPLE_SIZE,
    "resolution": MAX_SAMPLE_SIZE,
    "in_channels": 64,
    "out_channels": 128,
    "latent_dim": _MAX_WIDTH,
    "num_chunks": _MAX_WIDTH,
    "layers_per_block": 64,
    "norm_num_groups": _MAX_WIDTH,
    "num_attention_heads": _MAX_WIDTH,
    "num_train_timesteps": MAX_TRAIN_TIMESTEPS,
}


def check_config_bounds(config: Mapping[str, Any], where: str) -> None:
    r"""
    Raises `ValueError` naming `where` and the field unless every size field of a model or scheduler config that sets
    how much memory or time the component costs (`sample_size`, channels, widths, `layers_per_block`,
    `num_train_timesteps`, ...) is an int within its bound. The pipeline loader and the training scripts' frozen-DDPM
    loader read every config through this check before building anything from it.

    Args:
        config (`Mapping`): The config (a field that is missing or `None` is skipped).
        where (`str`): How to name the config in the message (its file, or the component).
    """
    for key, bound in _BOUNDED_INTS.items():
        if config.get(key) is not None:  # None: the field is unused (e.g. a UNet's num_train_timesteps)
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
                raise ValueError(f"{where}: `{key}` must be an int in [1, {bound}], got {short_repr(value)}.")
    channels = config.get("block_out_channels")
    if channels is not None:
        if not isinstance(channels, (list, tuple)) or not 1 <= len(channels) <= 16:
            raise ValueError(
                f"{where}: `block_out_channels` must be a list of 1 to 16 ints, got {short_repr(channels)}."
            )
        for value in channels:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_WIDTH:
                raise ValueError(
                    f"{where}: `block_out_channels` entries must be ints in [1, {_MAX_WIDTH}], got {short_repr(value)}."
                )


__all__ = ["MAX_SAMPLE_SIZE", "check_config_bounds"]

"""Exponential moving average of the trained weights, as in the official DiTi/PDAE training (method.md §6)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.training_utils import EMAModel


class ConstantDecayEMAModel(EMAModel):
    r"""
    diffusers' `EMAModel` with a constant decay from the first update: `ema ← decay · ema + (1 − decay) · θ` at every
    optimizer step, as in the official training (EMA 0.9999 every step, no warm-up).

    diffusers' own `EMAModel` ramps the decay up as `(1 + s) / (10 + s)` (or with `use_ema_warmup`), which reaches
    0.9999 only after ~90k steps; use it through [`make_ema`] with `warmup=True` when a short run needs usable EMA
    weights early.
    """

    def get_decay(self, optimization_step: int) -> float:
        return 0.0 if optimization_step <= self.update_after_step else float(self.decay)


def make_ema(parameters: Iterable[torch.nn.Parameter], decay: float, warmup: bool = False) -> EMAModel:
    r"""
    The EMA of `parameters`.

    Args:
        parameters (`Iterable[torch.nn.Parameter]`): The trained parameters (of the unwrapped model).
        decay (`float`): The (final) decay, in [0, 1).
        warmup (`bool`, defaults to `False`): Use diffusers' warm-up `1 − (1 + s)^(−2/3)` capped at `decay`
            instead of the constant decay.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"`ema_decay` must lie in [0, 1), got {decay}.")
    parameters = list(parameters)
    if warmup:
        return EMAModel(parameters, decay=decay, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3, foreach=True)
    return ConstantDecayEMAModel(parameters, decay=decay, foreach=True)

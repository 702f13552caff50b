"""Exponential moving average of the trained weights, as in the official DiTi/PDAE training (docs/method.md §6)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterable, Iterator

import torch
from diffusers.training_utils import EMAModel

from .args import ScriptArgumentError


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


@contextlib.contextmanager
def ema_weights(ema: EMAModel, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    r"""
    Runs the block with `module` in eval mode holding the EMA weights (how the scripts validate), then gives it back
    its trained weights and training mode, also when the block raises.

    Args:
        ema (`EMAModel`): The EMA of `module`'s parameters.
        module (`torch.nn.Module`): The unwrapped trained module.
    """
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    module.eval()
    try:
        yield module
    finally:
        ema.restore(module.parameters())
        module.train()


def ema_decay_at(update: int, decay: float, warmup: bool) -> float:
    r"""
    The decay applied by the `update`-th EMA update (1-based) of an EMA made by [`make_ema`]: `decay` throughout
    without warm-up; with it 0 at the first update, then `min(decay, 1 − update^(−2/3))`.
    """
    if not warmup:
        return float(decay)
    return 0.0 if update <= 1 else min(float(decay), 1.0 - update ** (-2 / 3))


def initial_weight_share(num_updates: int, decay: float, warmup: bool) -> float:
    r"""
    The weight of the initial parameters in the EMA after `num_updates` updates, the product of the decays: `decay^n`
    without warm-up (0.9999 keeps 94 % after 625 updates), 0 with it (its first update has decay 0).
    """
    return 0.0 if warmup else float(decay) ** num_updates


def describe_ema(decay: float, warmup: bool, num_updates: int) -> str:
    """One phrase for the start-up line of a training run: the decay schedule and what it means after `num_updates`."""
    if warmup:
        final = ema_decay_at(num_updates, decay, True)
        return f"EMA warm-up 1-(1+step)^(-2/3) up to {decay:g} (decay {final:.4g} at step {num_updates})"
    share = initial_weight_share(num_updates, decay, False)
    return f"EMA constant {decay:g} (the exported weights are {share:.0%} the initial ones after {num_updates} steps)"


def check_resumed_ema(ema: EMAModel, args: argparse.Namespace) -> None:
    r"""
    Raises [`ScriptArgumentError`] when the EMA restored from a checkpoint ramps its decay differently from what
    `--ema_warmup`/`--no-ema_warmup` asks for: the restored state would silently win and change the exported average.
    """
    restored = bool(ema.use_ema_warmup)
    if restored != bool(args.ema_warmup):
        kind, flag = ("a warm-up", "--ema_warmup") if restored else ("a constant-decay", "--no-ema_warmup")
        raise ScriptArgumentError(
            f"--ema_warmup: the checkpoint's EMA is {kind} EMA; resume it with {flag} (or start a new --output_dir)"
        )


def ema_summary(ema: EMAModel, args: argparse.Namespace, max_train_steps: int, logger: logging.Logger) -> str:
    r"""
    The EMA phrase of the start-up line (from the EMA itself, so a resumed run shows the checkpoint's decay), with a
    warning when a constant decay would leave the exported weights mostly the initial ones.
    """
    decay, warmup = float(ema.decay), bool(args.ema_warmup)
    share = initial_weight_share(max_train_steps, decay, warmup)
    if share > 0.5:
        logger.warning(
            "--ema_decay %g without warm-up over %d steps: the exported (EMA) weights will be %.0f%% the initial ones; "
            "drop --no-ema_warmup or lower --ema_decay",
            decay, max_train_steps, 100 * share,
        )  # fmt: skip
    return describe_ema(decay, warmup, max_train_steps)

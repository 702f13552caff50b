"""Loading the frozen DDPM that DiTi is trained against: a diffusers `UNet2DModel` and its noise schedule."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..schedule import PREDICTION_TYPES, DiffusionCoefficients

logger = logging.getLogger(__name__)


def load_frozen_ddpm(
    pretrained_model_name_or_path: str | os.PathLike,
    unet_subfolder: str | None = None,
    scheduler_subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> tuple[UNet2DModel, dict[str, Any]]:
    r"""
    The frozen UNet (eval mode, no gradient) and its noise-schedule config from a Hub id or a folder: a diffusers
    pipeline folder (`unet/` + `scheduler/`), a UNet folder, or what `train_ddpm.py` / `diti-hf convert` write.

    Args:
        pretrained_model_name_or_path (`str`): Hub id or local folder.
        unet_subfolder (`str`, *optional*): Subfolder of the UNet (default: `unet` if present, else the root).
        scheduler_subfolder (`str`, *optional*): Subfolder of the scheduler config (default: `scheduler`, the UNet's
            folder, the root; linear betas 1e-4..0.02 with T = 1000 when none has one).
        revision (`str`, *optional*): Hub revision.
        cache_dir (`str`, *optional*): Hub cache folder.

    Returns:
        `(unet, scheduler_config)`.

    Raises:
        `ValueError`: no UNet2DModel is found, the named scheduler subfolder has no config, or the DDPM is not an
        ε- or v-prediction model (DiTi's loss and sampler read ε; a v output converts to it exactly).
    """
    name = str(pretrained_model_name_or_path)
    common = {"revision": revision, "cache_dir": cache_dir}
    local = Path(name)
    subfolders = [unet_subfolder] if unet_subfolder is not None else ["unet", None]
    if unet_subfolder is None and local.is_dir():
        subfolders = ["unet"] if (local / "unet" / "config.json").is_file() else [None]
    errors = []
    for subfolder in subfolders:
        try:
            unet = UNet2DModel.from_pretrained(name, subfolder=subfolder, **common)
            break
        except (OSError, ValueError) as error:
            errors.append(f"subfolder={subfolder!r}: {error}")
    else:
        raise ValueError(f"{name!r}: no UNet2DModel found ({'; '.join(errors)})")
    candidates = [scheduler_subfolder] if scheduler_subfolder is not None else ["scheduler", subfolder, None]
    for candidate in dict.fromkeys(candidates):
        try:
            config = DDPMScheduler.load_config(name, subfolder=candidate, **common)
            break
        except (OSError, ValueError):
            continue
    else:
        if scheduler_subfolder is not None:
            raise ValueError(f"`scheduler_subfolder` {scheduler_subfolder!r}: no scheduler config in {name!r}")
        logger.warning("no scheduler config next to the UNet: using linear betas 1e-4..0.02, T=1000")
        config = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear").config
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise ValueError(
            f"DiTi reads an ε- or v-prediction DDPM (prediction_type one of {PREDICTION_TYPES}), "
            f"got prediction_type={config['prediction_type']!r}"
        )
    unet.requires_grad_(False)
    unet.eval()
    return unet, dict(config)


def eps_function(
    unet: UNet2DModel, coefficients: DiffusionCoefficients
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""
    `(x_t, t) → ε_θ(x_t, t)` of the frozen UNet, as float32 on the CPU (what the loss profile and the evaluation's
    diagnostics consume): inputs move to the UNet's device and dtype, and a v-prediction output is read as ε.

    Args:
        unet (`UNet2DModel`): The frozen DDPM.
        coefficients ([`DiffusionCoefficients`]): Its schedule (with its `prediction_type`).
    """

    @torch.no_grad()
    def eps_fn(sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sample, timesteps = sample.to(unet.device, unet.dtype), timesteps.to(unet.device)
        return coefficients.eps(unet(sample, timesteps).sample, sample, timesteps).float().cpu()

    return eps_fn

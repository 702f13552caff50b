"""Loading the frozen DDPM that DiTi is trained against: a diffusers `UNet2DModel` and its noise schedule."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from diffusers import DDPMScheduler, UNet2DModel

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
        ε-prediction model (DiTi's loss and sampler assume ε).
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
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"DiTi needs an ε-prediction DDPM, got prediction_type={config['prediction_type']!r}")
    unet.requires_grad_(False)
    unet.eval()
    return unet, dict(config)

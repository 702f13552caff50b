"""Loading the frozen DDPM that DiTi is trained against: a diffusers `UNet2DModel` and its noise schedule."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..config_bounds import check_config_bounds
from ..cpu_memory import check_fits_in_memory
from ..safe_io import read_json
from ..sampling import PREDICTION_TYPES, DiffusionCoefficients, check_scheduler_config

logger = logging.getLogger(__name__)

FLOAT32_BYTES = 4


def unet_parameter_count(config: Mapping[str, Any], where: str = "UNet config") -> int:
    r"""
    The number of parameters of `UNet2DModel(**config)`, from a shape-only (meta) model: no memory is allocated for
    a config of any size.

    Raises:
        `ValueError` naming `where` when diffusers cannot build a UNet from the config.
    """
    fields = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        with torch.device("meta"):
            reference = UNet2DModel.from_config(fields)
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise ValueError(f"{where}: no UNet2DModel can be built from it ({' '.join(str(error).split())}).") from None
    return sum(p.numel() for p in reference.parameters())


def check_unet_memory(
    config: Mapping[str, Any], copies: float, device: str | torch.device = "cpu", where: str = "UNet config"
) -> int:
    r"""
    Estimates from `config` alone what the UNet's weights will cost (parameters × 4 bytes × `copies`) and refuses,
    before anything is allocated, an estimate beyond the memory available on `device`. Activations are not counted,
    so the estimate is a floor.

    Args:
        config (`Mapping`): A `UNet2DModel` config (already through [`check_config_bounds`]).
        copies (`float`): float32 copies of the UNet's weights the caller holds (e.g. 5 for a trained UNet: weights,
            gradients, two Adam moments, EMA).
        device (`str` or `torch.device`, defaults to `"cpu"`): Where they will be held.
        where (`str`, defaults to `"UNet config"`): How to name the config in messages.

    Returns:
        `int`: The estimate in bytes.

    Raises:
        `ValueError`: One line with the parameter count, the estimate and the available memory.
    """
    count = unet_parameter_count(config, where)
    estimate = int(count * FLOAT32_BYTES * copies)
    times = "" if copies == 1 else f" × {copies:g} copies"
    check_fits_in_memory(
        estimate,
        device,
        f"{where}: a UNet of {_count(count)} parameters (float32{times}, activations not counted)",
    )
    return estimate


def _count(count: int) -> str:
    return f"{count / 1e9:,.1f} G" if count >= 10**9 else f"{count / 1e6:.2f} M"


def _read_config(name: str, subfolder: str | None, filename: str, common: dict[str, Any]) -> tuple[dict, str]:
    """A config file of a local folder or a Hub repo, read with the size limit of every config; `(config, where)`."""
    if Path(name).is_dir():
        path = Path(name, subfolder or "", filename)
        if not path.is_file():
            raise OSError(f"no {filename} in {path.parent}")
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(name, filename, subfolder=subfolder, **common))
    config = read_json(path, filename)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object.")
    return config, str(path)


def _read_unet_config(
    name: str, unet_subfolder: str | None, common: dict[str, Any]
) -> tuple[dict[str, Any], str, str | None]:
    """The UNet's config from `unet_subfolder`, else `unet/` or the root; `(config, where, subfolder)`."""
    local = Path(name)
    subfolders = [unet_subfolder] if unet_subfolder is not None else ["unet", None]
    if unet_subfolder is None and local.is_dir():
        subfolders = ["unet"] if (local / "unet" / "config.json").is_file() else [None]
    errors = []
    for subfolder in subfolders:
        try:
            config, where = _read_config(name, subfolder, "config.json", common)
            return config, where, subfolder
        except (OSError, ValueError) as error:
            errors.append(f"subfolder={subfolder!r}: {error}")
    raise ValueError(f"{name!r}: no UNet2DModel found ({'; '.join(errors)})")


def _read_scheduler_config(
    name: str, scheduler_subfolder: str | None, unet_subfolder: str | None, common: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """
    The scheduler config from `scheduler_subfolder`, else `scheduler/`, the UNet's folder or the root, else the
    default linear schedule; `(config, where)`.
    """
    candidates = [scheduler_subfolder] if scheduler_subfolder is not None else ["scheduler", unet_subfolder, None]
    for candidate in dict.fromkeys(candidates):
        try:
            return _read_config(name, candidate, DDPMScheduler.config_name, common)
        except OSError:
            continue
    if scheduler_subfolder is not None:
        raise ValueError(f"`scheduler_subfolder` {scheduler_subfolder!r}: no scheduler config in {name!r}")
    logger.warning("no scheduler config next to the UNet: using linear betas 1e-4..0.02, T=1000")
    default = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    return dict(default.config), "the default schedule"


def load_frozen_ddpm(
    pretrained_model_name_or_path: str | os.PathLike,
    unet_subfolder: str | None = None,
    scheduler_subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    memory_copies: float = 1.0,
) -> tuple[UNet2DModel, dict[str, Any]]:
    r"""
    The frozen UNet (eval mode, no gradient) and its noise-schedule config from a Hub id or a folder: a diffusers
    pipeline folder (`unet/` + `scheduler/`), a UNet folder, or what `train_ddpm.py` / `diti-hf convert` write.

    Both configs are read and checked before any weight is: the same size bounds as the pipeline loader's
    ([`~diti_hf.config_bounds.check_config_bounds`], [`~diti_hf.sampling.check_scheduler_config`]), then the
    memory the UNet's weights will take ([`check_unet_memory`]).

    Args:
        pretrained_model_name_or_path (`str`): Hub id or local folder.
        unet_subfolder (`str`, *optional*): Subfolder of the UNet (default: `unet` if present, else the root).
        scheduler_subfolder (`str`, *optional*): Subfolder of the scheduler config (default: `scheduler`, the UNet's
            folder, the root; linear betas 1e-4..0.02 with T = 1000 when none has one).
        revision (`str`, *optional*): Hub revision.
        cache_dir (`str`, *optional*): Hub cache folder.
        device (`str` or `torch.device`, defaults to `"cpu"`): Where the caller will hold the UNet, for the memory
            check.
        memory_copies (`float`, defaults to 1): float32 copies of the UNet's weights the caller will hold there (a
            training script also holds a trainable decoder of about the UNet's size, its gradients, Adam moments and
            EMA).

    Returns:
        `(unet, scheduler_config)`.

    Raises:
        `ValueError`: no UNet2DModel is found, a config is out of bounds or its UNet does not fit in memory, the
        named scheduler subfolder has no config, or the DDPM is not an ε- or v-prediction model (DiTi's loss and
        sampler read ε; a v output converts to it exactly).
    """
    name = str(pretrained_model_name_or_path)
    common = {"revision": revision, "cache_dir": cache_dir}
    unet_config, unet_where, subfolder = _read_unet_config(name, unet_subfolder, common)
    check_config_bounds(unet_config, unet_where)
    config, where = _read_scheduler_config(name, scheduler_subfolder, subfolder, common)
    check_config_bounds(config, where)
    check_scheduler_config(config, where)
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise ValueError(
            f"DiTi reads an ε- or v-prediction DDPM (prediction_type one of {PREDICTION_TYPES}), "
            f"got prediction_type={config['prediction_type']!r}"
        )

    check_unet_memory(unet_config, memory_copies, device, unet_where)
    try:
        unet = UNet2DModel.from_pretrained(name, subfolder=subfolder, **common)
    except (OSError, ValueError) as error:
        raise ValueError(f"{name!r}: no UNet2DModel found (subfolder={subfolder!r}: {error})") from None
    unet.requires_grad_(False)
    unet.eval()
    return unet, config


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

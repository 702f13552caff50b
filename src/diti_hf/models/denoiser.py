"""One forward of DiTi's denoiser: ε_θ of the frozen UNet and the decoder shift G, sharing the down path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.utils import BaseOutput

from ..sampling import DiffusionCoefficients
from .decoder import DiTiDecoderModel
from .unet_split import UNetFeatures, unet_down, unet_up, up_path_modules


@dataclass
class DenoiseOutput(BaseOutput):
    """
    Args:
        eps (`torch.Tensor`): Frozen ε_θ(x_t, t), computed without autograd.
        shift (`torch.Tensor` or `None`): Decoder shift G(x_t, t, z); `None` when no `z` was given.
        features ([`UNetFeatures`]): The frozen down path's features, to run the decoder on other conditions
            without recomputing them.
    """

    eps: torch.Tensor
    shift: torch.Tensor | None = None
    features: UNetFeatures | None = None


def denoise(
    unet: UNet2DModel,
    decoder: DiTiDecoderModel | None,
    sample: torch.Tensor,
    timestep: torch.Tensor | int,
    z: torch.Tensor | None = None,
    coefficients: DiffusionCoefficients | None = None,
) -> DenoiseOutput:
    r"""
    Runs the frozen UNet's down path once and returns both ε_θ(x_t, t) and the shift G(x_t, t, z) (docs/method.md §3).

    The frozen half (down path, mid and up path of ε_θ) runs under `torch.no_grad()`, so it stores no activations;
    gradients flow only through `decoder` and `z`.

    Args:
        unet (`UNet2DModel`): The frozen DDPM.
        decoder ([`DiTiDecoderModel`], *optional*): The shift branch; `None` (or `z=None`) gives ε_θ alone.
        sample (`torch.Tensor`): `x_t`, `(B, C, H, W)`.
        timestep (`torch.Tensor` or `int`): Integer time-steps, scalar or `(B,)`.
        z (`torch.Tensor`, *optional*): The (masked) condition `(B, latent_dim)`.
        coefficients ([`DiffusionCoefficients`], *optional*): The frozen DDPM's schedule; its `prediction_type` says
            how to read the UNet's output as ε (needed for a v-prediction DDPM; without it the output is taken as ε).

    Returns:
        [`DenoiseOutput`] with `eps` and `shift`.
    """
    if decoder is not None and z is not None:
        decoder.check_unet(unet)
    with torch.no_grad():
        features = unet_down(unet, sample, timestep)
        eps = unet_up(unet, features)
        if coefficients is not None:
            eps = coefficients.eps(eps, sample, timestep)
    if decoder is None or z is None:
        return DenoiseOutput(eps=eps, features=features)
    return DenoiseOutput(eps=eps, shift=decoder(features, z).sample, features=features)


def compile_denoiser(unet: UNet2DModel, decoder: DiTiDecoderModel | None = None, **compile_kwargs: Any) -> None:
    r"""
    `torch.compile`s, in place, every module that [`denoise`] runs: the UNet's time embedding, input conv, down blocks,
    the resnets, attentions and upsamplers of its mid and up blocks, its output head, and `decoder`.

    `torch.compile(unet)` would not reach them: `denoise` calls the UNet's parts directly (to share the down path),
    never `unet.forward`. Results are unchanged up to floating-point reassociation; the first call of each input shape
    pays the compilation. Raises dynamo's process-wide recompile limit to 8 per compiled module, since all of the
    UNet's resnets share one `forward`.

    Args:
        unet (`UNet2DModel`): The frozen DDPM.
        decoder ([`DiTiDecoderModel`], *optional*): The shift branch, compiled as a whole.
        compile_kwargs: Passed to `torch.compile` (e.g. `mode="max-autotune"`).
    """
    modules = [unet.time_embedding, unet.conv_in, *unet.down_blocks, *up_path_modules(unet.mid_block, unet.up_blocks)]
    modules += [unet.conv_norm_out, unet.conv_out] + ([decoder] if decoder is not None else [])
    # The UNet's resnets share one `forward`, and dynamo recompiles it for every resnet shape and batch size; past its
    # per-function limit (8) it silently runs the rest eagerly. Give every compiled module that default budget.
    config = torch._dynamo.config
    limit_name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit_name, max(getattr(config, limit_name), 8 * len(modules)))
    for module in modules:
        module.compile(**compile_kwargs)

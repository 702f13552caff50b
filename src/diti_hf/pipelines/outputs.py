"""The outputs of [`DiTiPipeline`]: generated images and inverted latents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class DiTiPipelineOutput(BaseOutput):
    """
    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): Generated images; numpy `(N, H, W, C)` and
            torch `(N, C, H, W)` are in [0, 1].
        latents (`torch.Tensor`, *optional*): The `x_T` each image was generated from.
        z (`torch.Tensor`, *optional*): The condition each image was generated with, `(N, latent_dim)`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor | None = None
    z: torch.Tensor | None = None


@dataclass
class DiTiInversionOutput(BaseOutput):
    """
    Args:
        latents (`torch.Tensor`): `x_T` from deterministic DDIM inversion, `(B, C, H, W)`.
        z (`torch.Tensor`, *optional*): The condition used for the inversion.
    """

    latents: torch.Tensor
    z: torch.Tensor | None = None


__all__ = ["DiTiInversionOutput", "DiTiPipelineOutput"]

"""The DiTi decoder: PDAE's z-conditioned "shift" branch on a frozen diffusers `UNet2DModel` (docs/method.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.resnet import ResnetBlock2D
from diffusers.utils import BaseOutput
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._cpu_kernels import dropout, upsample
from .strict_loading import StrictLoadingMixin
from .unet_split import UNetFeatures, check_supported_unet, up_path

# UNet2DModel config entries that fix the shapes of the up path; a decoder only fits a UNet that agrees on all.
UNET_TOPOLOGY_KEYS = (
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "mid_block_type",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "time_embedding_dim",
)


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class DiTiDecoderOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor`): The shift `G(x_t, t, z)`, same shape as ε.
    """

    sample: torch.Tensor


def _modulated_norm_act(
    norm: nn.GroupNorm, act: nn.Module, hidden: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None
) -> torch.Tensor:
    if scale is None:
        return act(norm(hidden))
    normed = F.group_norm(hidden, norm.num_groups, eps=norm.eps)
    if norm.affine:  # fold GN's own affine into the modulation: one multiply-add on the big tensor
        scale, shift = norm.weight[:, None, None] * scale, norm.bias[:, None, None] * scale + shift
    return act(torch.addcmul(shift, normed, scale))


def norm_act(
    norm: nn.GroupNorm,
    act: nn.Module,
    hidden: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    `act(GN(hidden) · scale + shift)` (just `act(GN(hidden))` without `scale`/`shift`), as the decoder's resnets use it.

    Under autograd only `hidden` (and the small `scale`/`shift`) is stored: the normalised and modulated tensors,
    each as large as `hidden`, are recomputed in backward. That costs a GroupNorm and two element-wise passes, little
    next to the convolutions, and cuts the training step's peak memory by about a third of its activations.
    """
    if torch.is_grad_enabled():
        return checkpoint(_modulated_norm_act, norm, act, hidden, scale, shift, use_reentrant=False)
    return _modulated_norm_act(norm, act, hidden, scale, shift)


class ZConditionedResnetBlock2D(ResnetBlock2D):
    r"""
    A diffusers `ResnetBlock2D` that is also modulated by the latent embedding `e_z`:
    `h = (1 + γ_z) · (GN(h) · (1 + γ_t) + β_t) + β_z`, with `(γ_z, β_z) = z_emb_proj(SiLU(e_z))` (docs/method.md §3).
    With `resnet_time_scale_shift="default"` the time embedding is added before GN and z modulates GN's output.
    """

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor, z_emb: torch.Tensor) -> torch.Tensor:
        # Inputs that need no gradient (frozen features, or everything without autograd) can be channels_last-strided
        # (diffusers' attention outputs). Under autograd torch 2.13's CPU GroupNorm backward crashes on them when only
        # its affine parameters need gradient; without autograd they are made contiguous too, so that results stay
        # those of the NCHW kernels (the official-parity tests sit close to their bound). Upsamplers are the exception:
        # `up_path` gives them channels_last input on purpose.
        upsampling_without_autograd = self.upsample is not None and not torch.is_grad_enabled()
        if not input_tensor.requires_grad and not upsampling_without_autograd:
            input_tensor = input_tensor.contiguous()
        hidden_states = norm_act(self.norm1, self.nonlinearity, input_tensor)
        if self.upsample is not None:
            input_tensor = upsample(self.upsample, input_tensor)
            hidden_states = upsample(self.upsample, hidden_states)
        elif self.downsample is not None:
            input_tensor = self.downsample(input_tensor)
            hidden_states = self.downsample(hidden_states)
        hidden_states = self.conv1(hidden_states)
        temb = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        z_scale, z_shift = self.z_emb_proj(F.silu(z_emb))[:, :, None, None].chunk(2, dim=1)
        if self.time_embedding_norm == "scale_shift":
            # (GN(h) · (1 + γ_t) + β_t) · (1 + γ_z) + β_z as one scale and shift, computed on (B, C, 1, 1)
            time_scale, time_shift = temb.chunk(2, dim=1)
            scale, shift = (1 + time_scale) * (1 + z_scale), time_shift * (1 + z_scale) + z_shift
        else:
            hidden_states, scale, shift = hidden_states + temb, 1 + z_scale, z_shift
        hidden_states = norm_act(self.norm2, self.nonlinearity, hidden_states, scale, shift)
        hidden_states = self.conv2(dropout(hidden_states, self.dropout.p, self.training))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        output = input_tensor + hidden_states
        # ADM's factor is 1: dividing by it would cost a pass over the tensor in forward and in backward
        return output if self.output_scale_factor == 1 else output / self.output_scale_factor

    @classmethod
    def promote(cls, resnet: ResnetBlock2D, z_emb_dim: int) -> ZConditionedResnetBlock2D:
        """Turns a freshly built `ResnetBlock2D` into this class in place, adding its `z_emb_proj`."""
        resnet.__class__ = cls
        resnet.z_emb_proj = nn.Linear(z_emb_dim, 2 * resnet.out_channels)
        return resnet


class DiTiDecoderModel(StrictLoadingMixin, ModelMixin, ConfigMixin):
    r"""
    The trainable shift branch `G(x_t, t, z)` of DiTi/PDAE. It reuses the frozen UNet's time embedding, input conv
    and down path (their features come in as [`UNetFeatures`]) and owns a trainable copy of the UNet's mid block
    and up path, every resnet of which is conditioned on `z` through `label_emb = Linear(latent_dim → temb_dim)`.

    Built with the UNet's topology (`from_unet`); `G ≡ 0` at initialisation because every resnet's last conv, every
    attention output projection and the output conv start at zero.

    Args:
        latent_dim (`int`, defaults to 512): Width of `z`.
        dropout (`float`, defaults to 0.0): Dropout in the decoder's resnets.
        noise_schedule (`dict`, *optional*): The betas the decoder was trained with
            (`diti_hf.sampling.noise_schedule_of(scheduler.config)`); a pipeline warns when its scheduler differs.
        **unet_topology: The entries of the frozen UNet's config listed in `UNET_TOPOLOGY_KEYS`.

    Examples:
    ```py
    >>> from diffusers import UNet2DModel
    >>> from diti_hf import DiTiDecoderModel, denoise
    >>> unet = UNet2DModel(sample_size=32, block_out_channels=(32, 64), down_block_types=("DownBlock2D",) * 2,
    ...                    up_block_types=("UpBlock2D",) * 2)
    >>> decoder = DiTiDecoderModel.from_unet(unet, latent_dim=64)
    >>> out = denoise(unet, decoder, torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.randn(2, 64))
    >>> out.shift.abs().max()  # zero at initialisation
    tensor(0.)
    ```
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 512,
        dropout: float = 0.0,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D"),
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D"),
        mid_block_type: str | None = "UNetMidBlock2D",
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        time_embedding_dim: int | None = None,
        noise_schedule: dict | None = None,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"`latent_dim` must be >= 1, got {latent_dim}.")
        topology = {key: _normalise(getattr(self.config, key)) for key in UNET_TOPOLOGY_KEYS}
        # Build the up path exactly as UNet2DModel does, then keep only the parts the shift branch owns.
        template = UNet2DModel(**topology, dropout=dropout)
        check_supported_unet(template)
        self.mid_block = template.mid_block
        self.up_blocks = template.up_blocks
        self.conv_norm_out = template.conv_norm_out
        self.conv_act = template.conv_act
        self.conv_out = template.conv_out
        temb_dim = template.time_embedding.linear_2.out_features
        self.label_emb = nn.Linear(latent_dim, temb_dim)
        for module in list(self.modules()):
            if type(module) is ResnetBlock2D:
                ZConditionedResnetBlock2D.promote(module, temb_dim)
        self.gradient_checkpointing = False
        self._zero_init_outputs()

    def _zero_init_outputs(self) -> None:
        zeroed = [self.conv_out]
        for module in self.modules():
            if isinstance(module, ZConditionedResnetBlock2D):
                zeroed.append(module.conv2)
            elif hasattr(module, "to_out"):  # diffusers Attention
                zeroed.append(module.to_out[0])
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    @classmethod
    def from_unet(cls, unet: UNet2DModel, latent_dim: int = 512, dropout: float | None = None) -> DiTiDecoderModel:
        """
        A randomly initialised decoder (G ≡ 0) that fits `unet`.

        Args:
            unet (`UNet2DModel`): The frozen DDPM.
            latent_dim (`int`, defaults to 512): Width of `z`.
            dropout (`float`, *optional*): Dropout of the trainable path; defaults to the UNet's.
        """
        check_supported_unet(unet)
        topology = {key: unet.config[key] for key in UNET_TOPOLOGY_KEYS}
        return cls(latent_dim=latent_dim, dropout=unet.config.dropout if dropout is None else dropout, **topology)

    def check_unet(self, unet: UNet2DModel) -> None:
        """Raises `ValueError` naming every topology entry on which `unet` and this decoder disagree."""
        check_supported_unet(unet)
        diffs = [
            f"{key}: unet={_normalise(unet.config[key])!r} decoder={_normalise(self.config[key])!r}"
            for key in UNET_TOPOLOGY_KEYS
            if _normalise(unet.config[key]) != _normalise(self.config[key])
        ]
        if diffs:
            raise ValueError("The decoder was built for a different UNet topology: " + "; ".join(diffs))

    def _resnet(self, resnet: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(resnet, *args)
        return resnet(*args)

    def forward(
        self, features: UNetFeatures, z: torch.Tensor, return_dict: bool = True
    ) -> DiTiDecoderOutput | tuple[torch.Tensor]:
        r"""
        Args:
            features ([`UNetFeatures`]): Output of `unet_down` on the frozen UNet for `(x_t, t)`.
            z (`torch.Tensor`): Condition `(B, latent_dim)` (already masked for DiTi).
            return_dict (`bool`, defaults to `True`): Return a [`DiTiDecoderOutput`] instead of a tuple.

        Returns:
            [`DiTiDecoderOutput`] or `tuple`: the shift `G`, same shape as ε.
        """
        batch = features.hidden_states.shape[0]
        if z.ndim != 2 or z.shape != (batch, self.config.latent_dim):
            raise ValueError(f"`z` must have shape ({batch}, {self.config.latent_dim}), got {tuple(z.shape)}.")
        z_emb = self.label_emb(z.to(self.label_emb.weight.dtype))
        hidden_states = up_path(
            self.mid_block, self.up_blocks, features, lambda resnet, h, temb: self._resnet(resnet, h, temb, z_emb)
        )
        sample = self.conv_out(norm_act(self.conv_norm_out, self.conv_act, hidden_states))
        return DiTiDecoderOutput(sample=sample) if return_dict else (sample,)

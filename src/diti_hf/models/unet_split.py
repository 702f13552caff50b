"""Running a diffusers `UNet2DModel` in two halves, so that its down path is computed once and shared.

`unet_down` runs the time embedding, the input conv and the down blocks; `unet_up` runs the mid block, the up
blocks and the output head on those features. `unet_up(unet, unet_down(unet, x, t))` equals `unet(x, t).sample` up
to float32 rounding (~2e-6: without autograd on CPU the upsampler resnets run in channels_last, see `up_path`).
DiTi's decoder (the shift branch) consumes the same `UNetFeatures` with its own trainable mid/up path; both paths
are walked by `up_path`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

SUPPORTED_DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
SUPPORTED_UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")


@dataclass
class UNetFeatures:
    """
    Output of the frozen down path.

    Attributes:
        hidden_states (`torch.Tensor`): Output of the last down block, input of the mid block.
        skips (`tuple[torch.Tensor, ...]`): Skip features, consumed by the up blocks from the last one backwards.
        temb (`torch.Tensor`): Time embedding `(B, temb_dim)`, shared by the frozen and the trainable path.
    """

    hidden_states: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    temb: torch.Tensor


def check_supported_unet(unet: UNet2DModel) -> None:
    """Raises `ValueError` naming every setting of `unet` that the split (and hence DiTi) does not support."""
    if not isinstance(unet, UNet2DModel):
        raise TypeError(f"`unet` must be a diffusers UNet2DModel, got {type(unet).__name__}.")
    cfg = unet.config
    problems = [f"down block {b!r}" for b in cfg.down_block_types if b not in SUPPORTED_DOWN_BLOCKS]
    problems += [f"up block {b!r}" for b in cfg.up_block_types if b not in SUPPORTED_UP_BLOCKS]
    if cfg.mid_block_type not in ("UNetMidBlock2D", None):
        problems.append(f"mid block {cfg.mid_block_type!r}")
    if cfg.time_embedding_type == "fourier":
        problems.append("time_embedding_type='fourier'")
    if cfg.class_embed_type is not None or cfg.num_class_embeds is not None:
        problems.append("class conditioning")
    if problems:
        raise ValueError(
            f"Unsupported UNet2DModel configuration: {', '.join(problems)}. Supported down blocks: "
            f"{SUPPORTED_DOWN_BLOCKS}; up blocks: {SUPPORTED_UP_BLOCKS}; positional/learned time embedding, "
            "no class conditioning."
        )


def unet_down(unet: UNet2DModel, sample: torch.Tensor, timestep: torch.Tensor | int) -> UNetFeatures:
    """
    Time embedding, input conv and down blocks of `unet` (the frozen half shared by ε_θ and the decoder).

    Args:
        unet (`UNet2DModel`): The frozen DDPM.
        sample (`torch.Tensor`): Noisy images `x_t`, `(B, C, H, W)`.
        timestep (`torch.Tensor` or `int`): Integer time-steps, a scalar or `(B,)`.
    """
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    timesteps = torch.as_tensor(timestep, device=sample.device)
    timesteps = timesteps.reshape(-1).expand(sample.shape[0]) if timesteps.numel() == 1 else timesteps
    temb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
    hidden_states = unet.conv_in(sample)
    skips = (hidden_states,)
    for block in unet.down_blocks:
        hidden_states, res_samples = block(hidden_states=hidden_states, temb=temb)
        skips += res_samples
    return UNetFeatures(hidden_states=hidden_states, skips=skips, temb=temb)


def up_path(
    mid_block: nn.Module | None,
    up_blocks: nn.ModuleList,
    features: UNetFeatures,
    run_resnet: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """
    The mid block and the up blocks of a `UNet2DModel` (or of the decoder's copy of them) on `features`, in the order
    and with the skip connections `UNet2DModel.forward` uses; every resnet runs as `run_resnet(resnet, hidden, temb)`.
    Returns the last up block's output (the input of the output head).
    """
    hidden_states, skips, temb = features.hidden_states, features.skips, features.temb
    if mid_block is not None:
        hidden_states = run_resnet(mid_block.resnets[0], hidden_states, temb)
        for attention, resnet in zip(mid_block.attentions, mid_block.resnets[1:]):
            if attention is not None:
                hidden_states = attention(hidden_states, temb=temb)
            hidden_states = run_resnet(resnet, hidden_states, temb)
    for block in up_blocks:
        attentions = getattr(block, "attentions", None)
        for i, resnet in enumerate(block.resnets):
            hidden_states = run_resnet(resnet, torch.cat([hidden_states, skips[-1]], dim=1), temb)
            skips = skips[:-1]
            if attentions is not None:
                hidden_states = attentions[i](hidden_states)
        for upsampler in block.upsamplers or ():
            if not isinstance(upsampler, ResnetBlock2D):  # UpBlock2D's interpolation + conv
                hidden_states = upsampler(hidden_states)
                continue
            if hidden_states.device.type == "cpu" and not torch.is_grad_enabled():
                # On CPU, NCHW ×2 nearest upsampling is slow and the 3×3 convs at the doubled size are faster in
                # channels_last: the 32→64 upsampler resnet runs 1.5× faster (benchmarks/results/speed.md,
                # "Second pass"). Not under autograd, where the convs' weight gradients are slower in that layout.
                hidden_states = hidden_states.contiguous(memory_format=torch.channels_last)
            hidden_states = run_resnet(upsampler, hidden_states, temb)
    return hidden_states


def up_path_modules(mid_block: nn.Module | None, up_blocks: nn.ModuleList) -> list[nn.Module]:
    """The modules `up_path` calls directly (resnets, attentions and upsamplers), e.g. to `torch.compile` them."""
    blocks = [block for block in (mid_block, *up_blocks) if block is not None]
    return [
        module
        for block in blocks
        for module in (
            *block.resnets,
            *(getattr(block, "attentions", None) or ()),
            *(getattr(block, "upsamplers", None) or ()),
        )
        if module is not None
    ]


def unet_up(unet: UNet2DModel, features: UNetFeatures) -> torch.Tensor:
    """Mid block, up blocks and output head of `unet` on `features`; returns the UNet's output (ε_θ)."""
    hidden_states = up_path(unet.mid_block, unet.up_blocks, features, lambda resnet, h, temb: resnet(h, temb))
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden_states)))

"""The DiTi encoder: image → z, with the time-step partition of z recorded in its config (docs/method.md §2, §5)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.utils import BaseOutput
from torch import nn

from ..partition import TimestepPartition
from ..safe_io import short_repr
from .strict_loading import StrictLoadingMixin

# The `model_type` written into the encoder's config.json: transformers' Auto classes dispatch on it
# (`diti_hf.models.transformers_encoder` registers it); diffusers' loader never sees it.
TRANSFORMERS_MODEL_TYPE = "diti_encoder"

ENCODER_PRESETS: dict[str, dict] = {
    # The official 64×64 encoder (1,487,104 parameters at latent_dim=512).
    "celeba64": {"sample_size": 64, "block_out_channels": (64, 128, 128, 128), "attention_stages": (1,)},
    # The official 128×128 encoder.
    "ffhq128": {"sample_size": 128, "block_out_channels": (64, 128, 256, 256, 256), "attention_stages": (2,)},
    # A small encoder for 32×32 images (demo, tests).
    "small32": {"sample_size": 32, "block_out_channels": (32, 64, 64), "attention_stages": (1,)},
}


def make_attention(channels: int, num_heads: int, norm_num_groups: int, eps: float = 1e-5) -> Attention:
    """A GroupNorm self-attention block with residual, as in diffusers' UNet2DModel (ADM's `AttentionBlock`)."""
    if channels % num_heads:
        raise ValueError(f"attention width {channels} is not divisible by `num_attention_heads`={num_heads}.")
    return Attention(
        channels,
        heads=num_heads,
        dim_head=channels // num_heads,
        eps=eps,
        norm_num_groups=norm_num_groups,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )


@dataclass
class DiTiEncoderOutput(BaseOutput):
    """
    Args:
        z (`torch.Tensor`): The representation, `(B, latent_dim)`.
        partition ([`TimestepPartition`], *optional*): The encoder's time-step partition, for the helpers below.
    """

    z: torch.Tensor
    partition: TimestepPartition | None = None

    def for_timesteps(self, t_lo: int, t_hi: int) -> torch.Tensor:
        """The dims of `z` that belong to the chunks of time-steps `[t_lo, t_hi)`, `(B, n)`."""
        start, end = self.partition.dims_for_timesteps(t_lo, t_hi)
        return self.z[:, start:end]

    def chunk(self, i: int) -> torch.Tensor:
        """The dims of `z` owned by chunk `i`, `(B, n_i)`."""
        start, end = self.partition.chunk_dims(i)
        return self.z[:, start:end]

    def masked(self, timestep: int) -> torch.Tensor:
        """
        `z` with every dim the decoder does not see at `timestep` set to zero: the chunks of time-steps `≤ t`'s chunk
        (`mask_mode="cumulative"`), or `t`'s chunk alone (`"interval"`).
        """
        start, end = self.partition.dims_for_chunks(*self.partition.active_chunks(timestep))
        return self.z * self.partition.dim_mask(start, end, self.z.device).to(self.z.dtype)


class _EncoderStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, pre_norm: bool, groups: int, attention_heads: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(groups, in_ch) if pre_norm else None
        self.act = nn.SiLU() if pre_norm else None
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1)
        self.attention = make_attention(out_ch, attention_heads, groups) if attention_heads else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.act(self.norm(x))
        x = self.conv(x)
        return self.attention(x) if self.attention is not None else x


class DiTiEncoderModel(StrictLoadingMixin, ModelMixin, ConfigMixin):
    r"""
    Convolutional encoder `E: image → z ∈ R^latent_dim` (raw linear features, no output normalisation).

    Stage 0 is a stride-2 3×3 conv; every further stage is GroupNorm → SiLU → stride-2 3×3 conv, optionally followed
    by a self-attention block (zero-initialised output); then GroupNorm → SiLU → flatten → Linear. The presets
    `"celeba64"` and `"ffhq128"` are the official 64×64 and 128×128 encoders.

    The config also records the [`TimestepPartition`] of `z` (`num_chunks`, `stages`, `dims_per_stage`,
    `num_train_timesteps`, `mask_mode`), so that a bare encoder knows which dims belong to which time-step range and
    the pipeline masks inversion and generation as in training.

    Args:
        sample_size (`int`, defaults to 64): Input height and width.
        in_channels (`int`, defaults to 3): Input channels.
        block_out_channels (`tuple[int]`, defaults to `(64, 128, 128, 128)`): Channels of each stride-2 stage.
        attention_stages (`tuple[int]`, defaults to `(1,)`): Stages followed by self-attention.
        num_attention_heads (`int`, defaults to 4): Heads of those attention blocks.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups.
        latent_dim (`int`, defaults to 512): Width `d` of `z`.
        num_chunks (`int`, defaults to 64): Number of partition chunks `k` (1 = PDAE).
        num_train_timesteps (`int`, defaults to 1000): `T` of the frozen DDPM.
        stages, dims_per_stage (`list[int]`, *optional*): A staged partition (docs/method.md §5).
        mask_mode (`str`, defaults to `"cumulative"`): What the decoder sees at time `t`: the chunks up to `t`'s
            (`"cumulative"`, the official DiTi) or `t`'s chunk alone (`"interval"`); see [`TimestepPartition`].
        latent_std (`list[float]`, *optional*): Per-dim std of `z` over the training data, recorded with
            `register_to_config(latent_std=...)` after training; used to scale classifier-direction edits.

    Examples:
    ```py
    >>> from diti_hf import DiTiEncoderModel
    >>> encoder = DiTiEncoderModel.from_preset("celeba64", latent_dim=512, num_chunks=64)
    >>> out = encoder(torch.randn(2, 3, 64, 64))
    >>> out.z.shape, out.for_timesteps(500, 1000).shape
    (torch.Size([2, 512]), torch.Size([2, 256]))
    ```
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 128, 128),
        attention_stages: tuple[int, ...] = (1,),
        num_attention_heads: int = 4,
        norm_num_groups: int = 32,
        latent_dim: int = 512,
        num_chunks: int = 64,
        num_train_timesteps: int = 1000,
        stages: list[int] | None = None,
        dims_per_stage: list[int] | None = None,
        latent_std: list[float] | None = None,
        mask_mode: str = "cumulative",
    ):
        super().__init__()
        # Configs come from files: every size is a positive int before anything divides by it or allocates it.
        for name, value in (
            ("sample_size", sample_size),
            ("in_channels", in_channels),
            ("num_attention_heads", num_attention_heads),
            ("norm_num_groups", norm_num_groups),
            ("latent_dim", latent_dim),
            *((f"block_out_channels[{i}]", c) for i, c in enumerate(block_out_channels)),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {short_repr(value)}.")
        if latent_std is not None:
            if len(latent_std) != latent_dim:
                raise ValueError(f"`latent_std` must have latent_dim={latent_dim} entries, got {len(latent_std)}.")
            finite = [isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in latent_std]
            if not all(finite):
                i = finite.index(False)
                raise ValueError(f"`latent_std` must be finite numbers; entry {i} is {short_repr(latent_std[i])}.")
        n = len(block_out_channels)
        if n < 1:
            raise ValueError(f"`block_out_channels` must be non-empty, got {block_out_channels}.")
        if sample_size % (2**n):
            raise ValueError(f"`sample_size`={sample_size} must be divisible by 2**len(block_out_channels)={2**n}.")
        bad = [s for s in attention_stages if not 0 <= s < n]
        if bad:
            raise ValueError(f"`attention_stages` must index stages in [0, {n}), got {list(attention_stages)}.")
        for ch in block_out_channels:
            if ch % norm_num_groups:
                raise ValueError(f"`block_out_channels` {block_out_channels} must be multiples of {norm_num_groups}.")
        self.partition = TimestepPartition(
            latent_dim, num_chunks, num_train_timesteps, stages, dims_per_stage, mask_mode=mask_mode
        )
        channels = [in_channels, *block_out_channels]
        self.blocks = nn.ModuleList(
            _EncoderStage(
                channels[i],
                channels[i + 1],
                pre_norm=i > 0,
                groups=norm_num_groups,
                attention_heads=num_attention_heads if i in attention_stages else None,
            )
            for i in range(n)
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[-1])
        self.act_out = nn.SiLU()
        feature_size = sample_size // 2**n
        self.proj_out = nn.Linear(block_out_channels[-1] * feature_size**2, latent_dim)
        for block in self.blocks:
            if block.attention is not None:
                nn.init.zeros_(block.attention.to_out[0].weight)
                nn.init.zeros_(block.attention.to_out[0].bias)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> DiTiEncoderModel:
        """An encoder from a named architecture (`"celeba64"`, `"ffhq128"`, `"small32"`); `kwargs` override it."""
        if name not in ENCODER_PRESETS:
            raise ValueError(f"Unknown encoder preset {name!r}; expected one of {sorted(ENCODER_PRESETS)}.")
        return cls(**{**ENCODER_PRESETS[name], **kwargs})

    def to_json_string(self) -> str:
        """The diffusers config as JSON, with the `model_type` transformers' `AutoConfig` needs to read the folder."""
        config = json.loads(super().to_json_string())
        return json.dumps({**config, "model_type": TRANSFORMERS_MODEL_TYPE}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def extract_init_dict(
        cls, config_dict: dict[str, Any], **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        # `model_type` is for transformers; diffusers would otherwise warn that the key is not expected. Another
        # value is left in, so that diffusers names it.
        if config_dict.get("model_type") == TRANSFORMERS_MODEL_TYPE:
            config_dict = {key: value for key, value in config_dict.items() if key != "model_type"}
        return super().extract_init_dict(config_dict, **kwargs)

    def check_images(self, images: torch.Tensor, name: str = "images") -> None:
        """Raises `ValueError`/`TypeError` unless `images` is a float `(B, C, H, W)` batch this encoder accepts."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(images).__name__}.")
        if not images.is_floating_point():
            raise TypeError(f"`{name}` must be a floating-point tensor in [-1, 1], got dtype {images.dtype}.")
        c, s = self.config.in_channels, self.config.sample_size
        if images.ndim != 4 or images.shape[1:] != (c, s, s):
            raise ValueError(f"`{name}` must have shape (B, {c}, {s}, {s}), got {tuple(images.shape)}.")
        if images.shape[0] == 0:
            raise ValueError(f"`{name}` is an empty batch.")

    def forward(self, images: torch.Tensor, return_dict: bool = True) -> DiTiEncoderOutput | tuple[torch.Tensor]:
        r"""
        Args:
            images (`torch.Tensor`): `(B, in_channels, sample_size, sample_size)` in [-1, 1].
            return_dict (`bool`, defaults to `True`): Return a [`DiTiEncoderOutput`] instead of a tuple.

        Returns:
            [`DiTiEncoderOutput`] or `tuple`: `z` of shape `(B, latent_dim)`.
        """
        self.check_images(images)
        h = images.to(self.proj_out.weight.dtype)
        for block in self.blocks:
            h = block(h)
        z = self.proj_out(self.act_out(self.norm_out(h)).flatten(1))
        return DiTiEncoderOutput(z=z, partition=self.partition) if return_dict else (z,)

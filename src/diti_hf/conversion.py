"""Converting official PDAE/DiTi checkpoints to diti_hf models (`UNet2DModel`, encoder, decoder, scheduler).

Written from `docs/conversion-notes.md` (config recipe and key layout) and `docs/method.md`; no code of the official
implementation is used. Every conversion is strict: each source key is consumed and each target key is filled with
the right shape, otherwise a `ValueError` lists what does not match.

Official layouts, in short:
- DDPM checkpoint: `{"ema_denoise_fn": unet_state_dict, ...}` with keys `time_embed`, `input_blocks`,
  `middle_block`, `output_blocks`, `out`.
- DiTi/PDAE checkpoint: `{"ema_encoder": ..., "ema_decoder": ..., ...}`; the decoder holds the frozen UNet's keys plus
  `label_emb.*` and the trainable `shift_middle_block.*`, `shift_output_blocks.*`, `shift_out.*`, whose resnets also
  carry `emb_z_layers.1` (the z projection).
- The encoder is an `nn.Sequential` (`encoder.<index>.*`); SiLU and Flatten have no parameters but take an index.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import DDIMScheduler, UNet2DModel
from torch import nn

from .config_bounds import MAX_SAMPLE_SIZE
from .models.decoder import DiTiDecoderModel
from .models.encoder import ENCODER_PRESETS, DiTiEncoderModel
from .partition import TimestepPartition
from .pipelines import DiTiPipeline
from .safe_io import check_dense_tensor, check_finite_tensors, read_text, short_repr
from .sampling import MAX_TRAIN_TIMESTEPS, check_scheduler_config, noise_schedule_of

PathLike = str | os.PathLike

# Fields of the official `denoise_fn_config` this converter understands. Anything else is refused rather than
# silently ignored, because an unknown option may change the architecture.
_REQUIRED_UNET_FIELDS = (
    "input_channel",
    "base_channel",
    "channel_multiplier",
    "num_residual_blocks_of_a_block",
    "attention_resolutions",
)
_OPTIONAL_UNET_FIELDS = {
    "model": "UNet",
    "num_heads": None,
    "head_channel": -1,
    "use_new_attention_order": False,
    "dropout": 0.0,
    "learn_sigma": False,
    # Only the value the diffusers recipe reproduces is accepted for these two.
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}
_FIXED_UNET_FIELDS = ("use_scale_shift_norm", "resblock_updown")

# Official encoder resolution (from its class name, e.g. `CELEBA64Encoder`) → our preset.
_ENCODER_PRESET_BY_RESOLUTION = {64: "celeba64", 128: "ffhq128"}

# Spellings of a staged partition inside `ssl_config`.
_STAGE_KEYS = ("stages", "stage", "stage_ends", "stage_end_times")
_STAGE_DIMS_KEYS = ("dims_per_stage", "dims", "stage_dims", "dim_per_stage")

# Official ResBlock sub-modules → diffusers `ResnetBlock2D` attributes.
_RESNET_RENAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
# The decoder's resnets are also modulated by z (`ZConditionedResnetBlock2D`).
_Z_RESNET_RENAMES = {**_RESNET_RENAMES, "emb_z_layers.1": "z_emb_proj"}
# Official attention block → diffusers `Attention`; `qkv` is split separately.
_ATTENTION_RENAMES = {"norm": "group_norm", "proj_out": "to_out.0"}

_DECODER_TRAINABLE_PREFIXES = ("label_emb.", "shift_")
_MAX_LISTED = 20


# ----------------------------------------------------------------------------------------------------------- configs
# The official CelebA-64 DDPM's `denoise_fn_config` (ADM: base 64, multipliers 1,2,2,2, 2 res-blocks, attention at
# 16×16 and in the middle, 1 head, dropout 0.1): the paper's frozen model and the 64×64 benchmark configuration.
OFFICIAL_CELEBA64_DDPM: dict[str, Any] = {
    "input_channel": 3,
    "base_channel": 64,
    "channel_multiplier": [1, 2, 2, 2],
    "num_residual_blocks_of_a_block": 2,
    "attention_resolutions": [4],
    "num_heads": 1,
    "head_channel": -1,
    "use_new_attention_order": False,
    "dropout": 0.1,
}


def load_official_yaml(path: PathLike) -> dict[str, Any]:
    """
    Reads an official PDAE/DiTi YAML config (`yaml.safe_load`: no Python objects are constructed).

    Args:
        path (`str` or `os.PathLike`): The YAML file.

    Returns:
        `dict`: The parsed config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = read_text(path, "YAML config")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(err).split())[:300]}") from err
    except RecursionError:
        raise ValueError(f"{path}: YAML nested too deeply.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must contain a YAML mapping, got {type(config).__name__}.")
    return config


def _as_config(config: PathLike | Mapping[str, Any], name: str) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_official_yaml(config)
    raise TypeError(f"`{name}` must be a path or a dict, got {type(config).__name__}.")


def _section(config: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    section = config.get(key)
    if not isinstance(section, Mapping):
        raise ValueError(
            f"{where}: missing or invalid `{key}` section (found top-level keys {short_repr(sorted(config, key=str))})."
        )
    return dict(section)


def _int_list(value: Any, field: str) -> list[int]:
    """A list of ints from a YAML list or a comma/space separated string."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"`{field}` must be a non-empty list of integers, got {short_repr(value)}.")
    try:
        ints = [int(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{field}` must be a non-empty list of integers, got {short_repr(value)}.") from err
    if any(isinstance(v, float) and v != int(v) for v in value) or any(isinstance(v, bool) for v in value):
        raise ValueError(f"`{field}` must be a non-empty list of integers, got {short_repr(value)}.")
    return ints


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{field}` must be a positive integer, got {short_repr(value)}.")
    return value


def _official_unet_fields(denoise_fn_config: Mapping[str, Any]) -> dict[str, Any]:
    """Validated official UNet fields, optional ones filled with their defaults."""
    unknown = sorted(set(denoise_fn_config) - set(_REQUIRED_UNET_FIELDS) - set(_OPTIONAL_UNET_FIELDS), key=str)
    if unknown:
        raise ValueError(
            f"denoise_fn_config: unsupported field(s) {short_repr(unknown)}; this converter understands "
            f"{sorted([*_REQUIRED_UNET_FIELDS, *_OPTIONAL_UNET_FIELDS])}."
        )
    missing = [f for f in _REQUIRED_UNET_FIELDS if f not in denoise_fn_config]
    if missing:
        raise ValueError(f"denoise_fn_config: missing required field(s) {missing}.")
    fields = {**_OPTIONAL_UNET_FIELDS, **denoise_fn_config}
    if fields["model"] != "UNet":
        raise ValueError(
            f"denoise_fn_config.model: only the official 'UNet' is supported, got {short_repr(fields['model'])}."
        )
    for field in _FIXED_UNET_FIELDS:
        if fields[field] is not True:
            raise ValueError(
                f"denoise_fn_config.{field}={short_repr(fields[field])} is not supported: the diffusers UNet2DModel recipe "
                f"reproduces only {field}=True."
            )
    for field in ("use_new_attention_order", "learn_sigma"):
        if not isinstance(fields[field], bool):
            raise ValueError(f"denoise_fn_config.{field} must be true or false, got {short_repr(fields[field])}.")
    for field in ("input_channel", "base_channel", "num_residual_blocks_of_a_block"):
        _positive_int(fields[field], f"denoise_fn_config.{field}")
    fields["channel_multiplier"] = _int_list(fields["channel_multiplier"], "denoise_fn_config.channel_multiplier")
    if any(m < 1 for m in fields["channel_multiplier"]):
        raise ValueError(f"denoise_fn_config.channel_multiplier must be positive, got {fields['channel_multiplier']}.")
    resolutions = fields["attention_resolutions"]
    fields["attention_resolutions"] = (
        [] if resolutions in (None, []) else _int_list(resolutions, "attention_resolutions")
    )
    dropout = fields["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"denoise_fn_config.dropout must be a number in [0, 1), got {short_repr(dropout)}.")
    return fields


def unet_config_from_official(denoise_fn_config: Mapping[str, Any], image_size: int) -> dict[str, Any]:
    r"""
    `UNet2DModel` keyword arguments equivalent to an official PDAE/DiTi UNet (`docs/conversion-notes.md`).

    Args:
        denoise_fn_config (`dict`): The official `denoise_fn_config` section (`base_channel`, `channel_multiplier`,
            `num_residual_blocks_of_a_block`, `attention_resolutions` as downsample factors, `num_heads`,
            `head_channel`, `use_new_attention_order`, `dropout`, optionally `learn_sigma`).
        image_size (`int`): Height and width of the images the DDPM was trained on (recorded as `sample_size`).

    Returns:
        `dict`: Arguments of `UNet2DModel(**config)`. The attention qkv order is not part of it; pass
        `denoise_fn_config["use_new_attention_order"]` to [`convert_official_unet_state_dict`].

    Raises:
        `ValueError`: For options `UNet2DModel` cannot express (`channel_multiplier[0] != 1`, a fixed `num_heads`
        over attention layers of different widths, `use_scale_shift_norm: false`, ...) or unknown fields.

    Examples:
    ```py
    >>> from diffusers import UNet2DModel
    >>> from diti_hf.conversion import load_official_yaml, unet_config_from_official
    >>> dpm = load_official_yaml("dpm_config.yml")
    >>> unet = UNet2DModel(**unet_config_from_official(dpm["denoise_fn_config"], image_size=64))
    ```
    """
    fields = _official_unet_fields(denoise_fn_config)
    image_size = _positive_int(image_size, "image_size")
    if image_size > MAX_SAMPLE_SIZE:
        raise ValueError(f"`image_size` must be at most {MAX_SAMPLE_SIZE}, got {image_size}.")
    base, mults = fields["base_channel"], fields["channel_multiplier"]
    n_levels = len(mults)
    if mults[0] != 1:
        # diffusers sizes the sinusoidal time embedding by block_out_channels[0]; the official UNet by base_channel.
        raise ValueError(
            f"denoise_fn_config.channel_multiplier[0] must be 1, got {mults}: UNet2DModel sizes its time embedding "
            f"by block_out_channels[0] (= {mults[0] * base}) while the official UNet uses base_channel (= {base})."
        )
    if base % 32:
        raise ValueError(f"denoise_fn_config.base_channel must be a multiple of 32 (GroupNorm(32)), got {base}.")
    if image_size % 2 ** (n_levels - 1):
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**(len(channel_multiplier) - 1) = {2 ** (n_levels - 1)}."
        )
    widths = [m * base for m in mults]
    attention = [2**level in fields["attention_resolutions"] for level in range(n_levels)]
    attention_head_dim = _attention_head_dim(fields, widths, attention)
    channels = fields["input_channel"]
    return {
        "sample_size": image_size,
        "in_channels": channels,
        "out_channels": channels * (2 if fields["learn_sigma"] else 1),
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": True,  # the official sinusoid is [cos, sin]
        "freq_shift": 0,
        "down_block_types": ["AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attention)],
        "block_out_channels": widths,
        "layers_per_block": fields["num_residual_blocks_of_a_block"],
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        # "resnet" is the only value that gives the Attn blocks a (resnet) resampler; anything else drops it.
        "downsample_type": "resnet",
        "upsample_type": "resnet",
        "dropout": float(fields["dropout"]),
        "act_fn": "silu",
        "attention_head_dim": attention_head_dim,
        "norm_num_groups": 32,
        # Without it the mid block's attention has no GroupNorm under scale_shift.
        "attn_norm_num_groups": 32,
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift",
        "add_attention": True,
    }


def _attention_head_dim(fields: Mapping[str, Any], widths: list[int], attention: list[bool]) -> int | None:
    head_channel, num_heads = fields["head_channel"], fields["num_heads"]
    # Every attention module: the levels with attention (down and up share a width) and the mid block (always).
    modules = [(f"level {lvl}", w) for lvl, (w, a) in enumerate(zip(widths, attention)) if a]
    modules.append(("mid block", widths[-1]))
    if head_channel != -1:
        _positive_int(head_channel, "denoise_fn_config.head_channel")
        bad = [f"{name} ({w} channels)" for name, w in modules if w % head_channel]
        if bad:
            raise ValueError(
                f"denoise_fn_config.head_channel={head_channel} does not divide the attention width of {bad}."
            )
        return head_channel
    if num_heads is None:
        raise ValueError("denoise_fn_config: set `num_heads` or `head_channel` (both are missing or -1).")
    num_heads = _positive_int(num_heads, "denoise_fn_config.num_heads")
    if num_heads == 1:
        return None  # UNet2DModel then uses one head of full width in every block.
    module_widths = {w for _, w in modules}
    if len(module_widths) > 1:
        listed = ", ".join(f"{name}: {w}" for name, w in modules)
        raise ValueError(
            f"denoise_fn_config.num_heads={num_heads} with attention layers of different widths ({listed}) gives a "
            "different head width per level, which UNet2DModel (a single `attention_head_dim`) cannot express. "
            "This converter needs one head width: a config that fixes `head_channel` instead of `num_heads`, or "
            "attention only at levels of equal width."
        )
    (width,) = module_widths
    if width % num_heads:
        raise ValueError(f"denoise_fn_config.num_heads={num_heads} does not divide the attention width {width}.")
    return width // num_heads


def scheduler_config_from_official(diffusion_config: Mapping[str, Any]) -> dict[str, Any]:
    """
    A diffusers `DDIMScheduler` config for the official `diffusion_config` (linear betas, ε-prediction), set up to
    reproduce the official DDIM grid (`timestep_spacing="leading"`, `set_alpha_to_one`, clipped x̂_0).

    Args:
        diffusion_config (`dict`): The official `diffusion_config` section (`timesteps`, `betas_type`,
            `linear_beta_start`, `linear_beta_end`).

    Returns:
        `dict`: Arguments of `DDIMScheduler.from_config`.
    """
    betas_type = diffusion_config.get("betas_type", "linear")
    if betas_type != "linear":
        raise ValueError(f"diffusion_config.betas_type: only 'linear' is supported, got {short_repr(betas_type)}.")
    missing = [k for k in ("timesteps", "linear_beta_start", "linear_beta_end") if k not in diffusion_config]
    if missing:
        raise ValueError(f"diffusion_config: missing field(s) {missing}.")
    beta_start, beta_end = diffusion_config["linear_beta_start"], diffusion_config["linear_beta_end"]
    for field, value in (("linear_beta_start", beta_start), ("linear_beta_end", beta_end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"diffusion_config.{field} must be a number in (0, 1), got {short_repr(value)}.")
    timesteps = _positive_int(diffusion_config["timesteps"], "diffusion_config.timesteps")
    if timesteps > MAX_TRAIN_TIMESTEPS:  # a scheduler allocates several float tables of this length
        raise ValueError(f"`diffusion_config.timesteps` must be at most {MAX_TRAIN_TIMESTEPS}, got {timesteps}.")
    config = {
        "num_train_timesteps": timesteps,
        "beta_start": float(beta_start),
        "beta_end": float(beta_end),
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }
    check_scheduler_config(config, "diffusion_config")
    return config


def partition_config_from_official(diti_config: Mapping[str, Any]) -> dict[str, Any]:
    """
    The time-step partition of an official DiTi config, as `TimestepPartition` / `DiTiEncoderModel` arguments.

    `ssl_config.k` gives `num_chunks` (a config without `ssl_config.k` is PDAE: `k = 1`); a staged partition is read
    from `ssl_config` under one of the spellings `stages`/`stage`/`stage_ends` and `dims_per_stage`/`dims`/`stage_dims`.

    Args:
        diti_config (`dict`): The official DiTi training config.

    Returns:
        `dict` with `latent_dim`, `num_chunks`, `num_train_timesteps`, `stages`, `dims_per_stage`.
    """
    latent_dim = _official_latent_dim(diti_config)
    timesteps = _positive_int(
        _section(diti_config, "diffusion_config", "DiTi config").get("timesteps"), "diffusion_config.timesteps"
    )
    ssl = diti_config.get("ssl_config") or {}
    if not isinstance(ssl, Mapping):
        raise ValueError(f"ssl_config must be a mapping, got {type(ssl).__name__}.")
    if "k" in ssl:
        num_chunks = _positive_int(ssl["k"], "ssl_config.k")
    else:
        warnings.warn("The DiTi config has no `ssl_config.k`: converting as PDAE (num_chunks=1).", stacklevel=3)
        num_chunks = 1
    stages = _one_of(ssl, _STAGE_KEYS)
    dims = _one_of(ssl, _STAGE_DIMS_KEYS)
    if (stages is None) != (dims is None):
        given = "stage end-times" if dims is None else "dims per stage"
        raise ValueError(
            f"ssl_config gives {given} without the other: a staged partition needs one of {list(_STAGE_KEYS)} and "
            f"one of {list(_STAGE_DIMS_KEYS)}."
        )
    config = {
        "latent_dim": latent_dim,
        "num_chunks": num_chunks,
        "num_train_timesteps": timesteps,
        "stages": None if stages is None else _int_list(stages[1], f"ssl_config.{stages[0]}"),
        "dims_per_stage": None if dims is None else _int_list(dims[1], f"ssl_config.{dims[0]}"),
    }
    TimestepPartition(**config)  # validates, naming the bad field
    return config


def _one_of(config: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    found = [k for k in keys if config.get(k) is not None]
    if len(found) > 1:
        raise ValueError(f"ssl_config: ambiguous staged partition, several of {found} are set; keep one.")
    return (found[0], config[found[0]]) if found else None


def _official_latent_dim(diti_config: Mapping[str, Any]) -> int:
    values = {}
    for section in ("encoder_config", "decoder_config"):
        if isinstance(diti_config.get(section), Mapping) and "latent_dim" in diti_config[section]:
            values[f"{section}.latent_dim"] = diti_config[section]["latent_dim"]
    if not values:
        raise ValueError("DiTi config: missing encoder_config.latent_dim.")
    for field, value in values.items():
        _positive_int(value, field)
    if len(set(values.values())) > 1:
        raise ValueError(f"DiTi config: inconsistent latent dims {values}.")
    return _positive_int(next(iter(values.values())), next(iter(values)))


def encoder_preset_from_official(model_name: str) -> str:
    """
    Our encoder preset for an official encoder class name: `CELEBA64Encoder` → `"celeba64"`, a 128×128 encoder
    (e.g. `FFHQ128Encoder`) → `"ffhq128"`. The architecture is set by the resolution in the name.
    """
    match = re.fullmatch(r"[A-Za-z_]*?(\d+)Encoder", str(model_name))
    preset = _ENCODER_PRESET_BY_RESOLUTION.get(int(match.group(1))) if match else None
    if preset is None:
        raise ValueError(
            f"encoder_config.model={short_repr(model_name)} is not a known official encoder; supported: a '<NAME>64Encoder' "
            f"(e.g. CELEBA64Encoder → 'celeba64') or a '<NAME>128Encoder' (→ 'ffhq128')."
        )
    return preset


def encoder_config_from_official(diti_config: Mapping[str, Any], in_channels: int = 3) -> dict[str, Any]:
    """
    `DiTiEncoderModel` arguments for an official DiTi config: the preset named by `encoder_config.model`, the latent
    width and the time-step partition.

    Args:
        diti_config (`dict`): The official DiTi training config.
        in_channels (`int`, defaults to 3): Image channels (those of the DDPM).

    Returns:
        `dict`: Arguments of `DiTiEncoderModel(**config)`.
    """
    encoder_section = _section(diti_config, "encoder_config", "DiTi config")
    preset = encoder_preset_from_official(encoder_section.get("model"))
    config = {
        **ENCODER_PRESETS[preset],
        "in_channels": in_channels,
        # The official encoders: 4-head attention (legacy qkv order), GroupNorm(32).
        "num_attention_heads": 4,
        "norm_num_groups": 32,
        **partition_config_from_official(diti_config),
    }
    image_size = (diti_config.get("train_dataset_config") or {}).get("image_size")
    if image_size is not None and image_size != config["sample_size"]:
        raise ValueError(
            f"train_dataset_config.image_size={image_size} does not match encoder_config.model="
            f"{short_repr(encoder_section.get('model'))} (a {config['sample_size']}×{config['sample_size']} encoder)."
        )
    config["block_out_channels"] = list(config["block_out_channels"])
    config["attention_stages"] = list(config["attention_stages"])
    return config


# --------------------------------------------------------------------------------------------------- key mappings
@dataclass(frozen=True)
class _ModuleMap:
    """One official module (`source` prefix) and its diffusers counterpart (`target` prefix)."""

    source: str
    target: str
    kind: str  # "plain" (same parameter names), "resnet", "z_resnet" or "attention"


def _unet_down_maps(unet_config: Mapping[str, Any]) -> list[_ModuleMap]:
    """Time embedding, input conv and down path (`input_blocks`)."""
    maps = [
        _ModuleMap("time_embed.0", "time_embedding.linear_1", "plain"),
        _ModuleMap("time_embed.2", "time_embedding.linear_2", "plain"),
        _ModuleMap("input_blocks.0.0", "conv_in", "plain"),
    ]
    n, n_levels = unet_config["layers_per_block"], len(unet_config["block_out_channels"])
    index = 1
    for level, block_type in enumerate(unet_config["down_block_types"]):
        for j in range(n):
            maps.append(_ModuleMap(f"input_blocks.{index}.0", f"down_blocks.{level}.resnets.{j}", "resnet"))
            if block_type.startswith("Attn"):
                maps.append(_ModuleMap(f"input_blocks.{index}.1", f"down_blocks.{level}.attentions.{j}", "attention"))
            index += 1
        if level < n_levels - 1:  # every level but the last ends with one resnet downsampler
            maps.append(_ModuleMap(f"input_blocks.{index}.0", f"down_blocks.{level}.downsamplers.0", "resnet"))
            index += 1
    return maps


def _unet_up_maps(unet_config: Mapping[str, Any], source_prefix: str = "", resnet_kind: str = "resnet"):
    """
    Mid block, up path (`output_blocks`) and output head. The decoder's trainable path has the same layout under
    `shift_` with z-conditioned resnets, so both use this one function.
    """
    p = source_prefix
    maps = [
        _ModuleMap(f"{p}middle_block.0", "mid_block.resnets.0", resnet_kind),
        _ModuleMap(f"{p}middle_block.1", "mid_block.attentions.0", "attention"),
        _ModuleMap(f"{p}middle_block.2", "mid_block.resnets.1", resnet_kind),
    ]
    n, n_levels = unet_config["layers_per_block"], len(unet_config["block_out_channels"])
    index = 0
    for i, block_type in enumerate(unet_config["up_block_types"]):
        has_attention = block_type.startswith("Attn")
        for j in range(n + 1):
            source = f"{p}output_blocks.{index}"
            maps.append(_ModuleMap(f"{source}.0", f"up_blocks.{i}.resnets.{j}", resnet_kind))
            if has_attention:
                maps.append(_ModuleMap(f"{source}.1", f"up_blocks.{i}.attentions.{j}", "attention"))
            if j == n and i < n_levels - 1:  # the last element of the level's last block is its upsampler
                last = 2 if has_attention else 1
                maps.append(_ModuleMap(f"{source}.{last}", f"up_blocks.{i}.upsamplers.0", resnet_kind))
            index += 1
    maps += [_ModuleMap(f"{p}out.0", "conv_norm_out", "plain"), _ModuleMap(f"{p}out.2", "conv_out", "plain")]
    return maps


def _encoder_maps(encoder_config: Mapping[str, Any]) -> list[_ModuleMap]:
    """
    Walks the official encoder's `nn.Sequential`: conv; then per further stage GroupNorm, SiLU, conv (+ attention);
    then GroupNorm, SiLU, Flatten, Linear. Parameter-free layers still take an index.
    """
    attention_stages = set(encoder_config["attention_stages"])
    maps, index = [], 0
    for stage in range(len(encoder_config["block_out_channels"])):
        if stage > 0:
            maps.append(_ModuleMap(f"encoder.{index}", f"blocks.{stage}.norm", "plain"))
            index += 2  # GroupNorm, SiLU
        maps.append(_ModuleMap(f"encoder.{index}", f"blocks.{stage}.conv", "plain"))
        index += 1
        if stage in attention_stages:
            maps.append(_ModuleMap(f"encoder.{index}", f"blocks.{stage}.attention", "attention"))
            index += 1
    maps.append(_ModuleMap(f"encoder.{index}", "norm_out", "plain"))
    index += 3  # GroupNorm, SiLU, Flatten
    maps.append(_ModuleMap(f"encoder.{index}", "proj_out", "plain"))
    return maps


def _drop_conv1d_axis(tensor: torch.Tensor) -> torch.Tensor:
    # The official attention projections are 1×1 conv1d weights (out, in, 1); diffusers uses Linear (out, in).
    return tensor[..., 0] if tensor.ndim == 3 and tensor.shape[-1] == 1 else tensor


def _split_qkv(tensor: torch.Tensor, heads: int, new_order: bool) -> tuple[torch.Tensor, ...] | None:
    """Splits an official qkv weight `(3C, C[, 1])` or bias `(3C,)` into q, k, v; `None` if the shape is wrong."""
    tensor = _drop_conv1d_axis(tensor)
    rows, rest = tensor.shape[0], tuple(tensor.shape[1:])
    if rows % (3 * heads):
        return None
    if new_order:  # [q; k; v], each head-major
        parts = tensor.chunk(3, dim=0)
    else:  # legacy: per head [q_h; k_h; v_h]
        grouped = tensor.reshape(heads, 3, rows // (3 * heads), *rest)
        parts = tuple(grouped[:, i].reshape(rows // 3, *rest) for i in range(3))
    # Own, contiguous storage: the result may be saved with safetensors, which refuses shared tensors.
    return tuple(p.clone(memory_format=torch.contiguous_format) for p in parts)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return f"{len(items)} ({shown}{', ...' if len(items) > _MAX_LISTED else ''})"


def _apply_maps(
    state_dict: Mapping[str, torch.Tensor],
    maps: list[_ModuleMap],
    reference: nn.Module,
    new_attention_order: bool,
    what: str,
) -> dict[str, torch.Tensor]:
    """Renames `state_dict` by `maps` and checks it strictly against `reference.state_dict()` (keys and shapes)."""
    converted: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    bad_shapes: list[str] = []
    for m in maps:
        prefix = m.source + "."
        for key in [k for k in state_dict if k.startswith(prefix)]:
            sub, _, param = key[len(prefix) :].rpartition(".")
            value = state_dict[key]
            if m.kind == "plain":
                if sub:
                    continue
                converted[f"{m.target}.{param}"] = value
            elif m.kind in ("resnet", "z_resnet"):
                renames = _Z_RESNET_RENAMES if m.kind == "z_resnet" else _RESNET_RENAMES
                if sub not in renames:
                    continue
                converted[f"{m.target}.{renames[sub]}.{param}"] = value
            elif sub == "qkv":
                heads = reference.get_submodule(m.target).heads
                parts = _split_qkv(value, heads, new_attention_order)
                if parts is None:
                    bad_shapes.append(f"{key} {tuple(value.shape)} (not 3 × {heads} heads)")
                else:
                    for name, part in zip(("to_q", "to_k", "to_v"), parts):
                        converted[f"{m.target}.{name}.{param}"] = part
            elif sub in _ATTENTION_RENAMES:
                converted[f"{m.target}.{_ATTENTION_RENAMES[sub]}.{param}"] = _drop_conv1d_axis(value)
            else:
                continue
            consumed.add(key)
    expected = reference.state_dict()
    unexpected = [k for k in state_dict if k not in consumed]
    missing = [k for k in expected if k not in converted]
    extra_targets = [k for k in converted if k not in expected]
    bad_shapes += [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected checkpoint keys {_listing(unexpected)}")
    if extra_targets:
        problems.append(f"keys the model does not have {_listing(extra_targets)}")
    if bad_shapes:
        problems.append(f"shape mismatches {_listing(bad_shapes)}")
    if problems:
        raise ValueError(f"The official {what} state dict does not match the converted model: " + "; ".join(problems))
    return converted


def _check_official_unet_config(unet_config: Mapping[str, Any]) -> None:
    allowed_down, allowed_up = (
        ("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        ("ResnetUpsampleBlock2D", "AttnUpBlock2D"),
    )
    problems = [
        f"down block {short_repr(b)}" for b in unet_config.get("down_block_types", ()) if b not in allowed_down
    ]
    problems += [f"up block {short_repr(b)}" for b in unet_config.get("up_block_types", ()) if b not in allowed_up]
    for key, value in (
        ("downsample_type", "resnet"),
        ("upsample_type", "resnet"),
        ("mid_block_type", "UNetMidBlock2D"),
    ):
        if unet_config.get(key) != value:
            problems.append(f"{key}={short_repr(unet_config.get(key))} (expected {short_repr(value)})")
    if problems:
        raise ValueError(
            "`unet_config` does not have the official PDAE/DiTi layout (" + ", ".join(problems) + "); build it "
            "with `unet_config_from_official`."
        )


def _strip_ddp_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Checkpoints saved from a DistributedDataParallel wrapper prefix every key with "module.".
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _convert_unet(state_dict, unet: UNet2DModel, new_attention_order: bool) -> dict[str, torch.Tensor]:
    config = dict(unet.config)
    maps = _unet_down_maps(config) + _unet_up_maps(config)
    return _apply_maps(_strip_ddp_prefix(state_dict), maps, unet, new_attention_order, "UNet")


def _convert_decoder(state_dict, decoder: DiTiDecoderModel, new_attention_order: bool) -> dict[str, torch.Tensor]:
    # The trainable path has exactly the UNet's mid/up layout under "shift_": reuse the UNet's maps.
    maps = [_ModuleMap("label_emb", "label_emb", "plain")]
    maps += _unet_up_maps(dict(decoder.config), source_prefix="shift_", resnet_kind="z_resnet")
    return _apply_maps(_strip_ddp_prefix(state_dict), maps, decoder, new_attention_order, "decoder")


def _convert_encoder(state_dict, encoder: DiTiEncoderModel) -> dict[str, torch.Tensor]:
    # The official encoder's attention block always uses the legacy qkv order.
    return _apply_maps(_strip_ddp_prefix(state_dict), _encoder_maps(encoder.config), encoder, False, "encoder")


def convert_official_unet_state_dict(
    state_dict: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any], new_attention_order: bool = False
) -> dict[str, torch.Tensor]:
    r"""
    Renames an official UNet state dict (`time_embed`, `input_blocks`, `middle_block`, `output_blocks`, `out`) to
    `UNet2DModel` keys, splitting each attention `qkv` into `to_q`/`to_k`/`to_v`.

    Args:
        state_dict (`dict[str, torch.Tensor]`): The official UNet weights (e.g. `checkpoint["ema_denoise_fn"]`).
        unet_config (`dict`): The target config, from [`unet_config_from_official`].
        new_attention_order (`bool`, defaults to `False`): The official `use_new_attention_order` (qkv split in
            thirds) instead of the legacy per-head `[q_h; k_h; v_h]` grouping.

    Returns:
        `dict[str, torch.Tensor]`: A state dict that `UNet2DModel(**unet_config).load_state_dict(..., strict=True)`
        accepts.

    Raises:
        `ValueError`: Listing missing, unexpected and wrongly shaped keys, if the weights do not fit `unet_config`.
    """
    _check_official_unet_config(unet_config)
    _check_weights(state_dict, "the UNet state dict")
    with torch.device("meta"):  # a shape reference only: no memory for a config of any size
        reference = UNet2DModel(**unet_config)
    return _convert_unet(state_dict, reference, new_attention_order)


def split_official_decoder_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """
    Splits an official decoder (ShiftUNet) state dict into the frozen UNet's keys and the trainable keys
    (`label_emb.*`, `shift_*`).

    Returns:
        `tuple[dict, dict]`: `(frozen_unet_state_dict, trainable_state_dict)`.
    """
    state_dict = _strip_ddp_prefix(state_dict)
    trainable = {k: v for k, v in state_dict.items() if k.startswith(_DECODER_TRAINABLE_PREFIXES)}
    frozen = {k: v for k, v in state_dict.items() if k not in trainable}
    return frozen, trainable


def convert_official_decoder_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    unet_config: Mapping[str, Any],
    latent_dim: int | None = None,
    new_attention_order: bool = False,
) -> dict[str, torch.Tensor]:
    r"""
    Renames the trainable part of an official decoder (`label_emb.*`, `shift_middle_block.*`,
    `shift_output_blocks.*`, `shift_out.*`) to [`DiTiDecoderModel`] keys; `emb_z_layers.1` becomes `z_emb_proj`.

    Args:
        state_dict (`dict[str, torch.Tensor]`): The trainable keys only (see [`split_official_decoder_state_dict`]).
        unet_config (`dict`): The frozen UNet's config, from [`unet_config_from_official`].
        latent_dim (`int`, *optional*): Width of z; read from `label_emb.weight` if not given.
        new_attention_order (`bool`, defaults to `False`): The official `use_new_attention_order`.

    Returns:
        `dict[str, torch.Tensor]`: A state dict for `DiTiDecoderModel.from_unet(UNet2DModel(**unet_config),
        latent_dim)` with `strict=True`.
    """
    _check_official_unet_config(unet_config)
    if latent_dim is None:
        weight = _strip_ddp_prefix(state_dict).get("label_emb.weight")
        if weight is None or weight.ndim != 2:
            raise ValueError("The decoder state dict has no 2-D `label_emb.weight`; pass `latent_dim`.")
        latent_dim = weight.shape[1]
    _check_weights(state_dict, "the decoder state dict")
    with torch.device("meta"):
        decoder = DiTiDecoderModel.from_unet(UNet2DModel(**unet_config), latent_dim=latent_dim)
    return _convert_decoder(state_dict, decoder, new_attention_order)


def convert_official_encoder_state_dict(
    state_dict: Mapping[str, torch.Tensor], encoder_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    r"""
    Renames an official encoder state dict (`encoder.<index>.*` of an `nn.Sequential`) to [`DiTiEncoderModel`] keys,
    walking the Sequential by the encoder's `block_out_channels` and `attention_stages`.

    Args:
        state_dict (`dict[str, torch.Tensor]`): The official encoder weights (e.g. `checkpoint["ema_encoder"]`).
        encoder_config (`dict`): `DiTiEncoderModel` arguments, from [`encoder_config_from_official`].

    Returns:
        `dict[str, torch.Tensor]`: A state dict that `DiTiEncoderModel(**encoder_config)` loads with `strict=True`.
    """
    _check_weights(state_dict, "the encoder state dict")
    with torch.device("meta"):
        reference = DiTiEncoderModel(**encoder_config)
    return _convert_encoder(state_dict, reference)


# ----------------------------------------------------------------------------------------------------- checkpoints
def load_official_checkpoint(path: PathLike) -> dict[str, Any]:
    """
    Loads an official `.pt` checkpoint with `torch.load(weights_only=True)`: tensors and plain containers only, never
    arbitrary pickled objects.

    Args:
        path (`str` or `os.PathLike`): The checkpoint file.

    Returns:
        `dict`: The checkpoint (e.g. with `ema_denoise_fn`, or `ema_encoder` and `ema_decoder`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is not a plain-tensor checkpoint (it pickles Python objects) and was refused for safety: "
            f"{' '.join(str(err).split())[:300]}"
        ) from err
    except Exception as err:  # a corrupt file can fail anywhere in the unpickler (IndexError, KeyError, ...)
        message = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint: {message}") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} must hold a dict of state dicts, got {type(checkpoint).__name__}.")
    return checkpoint


_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_weights(weights: Mapping[str, torch.Tensor], where: str) -> None:
    """
    Each tensor must be floating point, hold the data its shape claims (no zero or overlapping strides, which a
    reshape or copy would expand into gigabytes) and be finite: checked before any tensor is split, compared or copied.
    """
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{where}: {short_repr(name)} is a {type(tensor).__name__}, not a tensor.")
        if tensor.dtype not in _WEIGHT_DTYPES:
            raise ValueError(f"{where}: tensor {short_repr(name)} is {tensor.dtype}; weights must be floating point.")
        check_dense_tensor(name, tensor, where)
    check_finite_tensors(weights.items(), where)


def _select_weights(checkpoint: Mapping[str, Any], name: str, prefer_ema: bool, source: str) -> dict:
    """`checkpoint["ema_<name>"]` (or `checkpoint[name]` if `prefer_ema=False`), falling back with a warning."""
    preferred, fallback = (f"ema_{name}", name) if prefer_ema else (name, f"ema_{name}")
    for key in (preferred, fallback):
        if key in checkpoint:
            if key == fallback:
                warnings.warn(f"{source} has no `{preferred}` weights; using `{fallback}`.", stacklevel=3)
            weights = checkpoint[key]
            if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
                raise ValueError(f"{source}: `{key}` is not a state dict of tensors.")
            _check_weights(weights, f"{source} `{key}`")
            return dict(weights)
    raise ValueError(
        f"{source} has neither `{preferred}` nor `{fallback}` (keys: {short_repr(sorted(checkpoint, key=str))})."
    )


def _check_frozen_unet(frozen: Mapping[str, torch.Tensor], ddpm: Mapping[str, torch.Tensor]) -> None:
    """The decoder's copy of the frozen UNet must be the DDPM the decoder was trained on."""
    ddpm = _strip_ddp_prefix(ddpm)
    problems = [f"{k} (only in the DiTi checkpoint)" for k in frozen if k not in ddpm]
    problems += [f"{k} (only in the DDPM checkpoint)" for k in ddpm if k not in frozen]
    for key in (k for k in frozen if k in ddpm):
        a, b = frozen[key], ddpm[key]
        if a.shape != b.shape:
            problems.append(f"{key} (shape {tuple(a.shape)} vs {tuple(b.shape)})")
        # An EMA of a constant parameter may move by a few float32 ulps (depending on how the EMA is computed), so
        # allow that much; a different DDPM differs by orders of magnitude more.
        elif not torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-6):
            problems.append(f"{key} (max abs diff {(a.double() - b.double()).abs().max().item():.3g})")
    if problems:
        raise ValueError(
            "The frozen UNet inside the DiTi decoder differs from the DDPM checkpoint, so the DiTi checkpoint was not "
            f"trained on this DDPM: {_listing(problems)}"
        )


# ------------------------------------------------------------------------------------------------------ top level
@dataclass
class ConvertedModels:
    """
    The diti_hf components of an official checkpoint.

    Args:
        unet (`UNet2DModel`): The frozen DDPM.
        scheduler (`DDIMScheduler`): Its noise schedule, set up for the official DDIM grid.
        encoder ([`DiTiEncoderModel`], *optional*): `None` for a DDPM-only conversion.
        decoder ([`DiTiDecoderModel`], *optional*): `None` for a DDPM-only conversion.
    """

    unet: UNet2DModel
    scheduler: DDIMScheduler
    encoder: DiTiEncoderModel | None = None
    decoder: DiTiDecoderModel | None = None


def _resolve_image_size(image_size: int | None, *configs: Mapping[str, Any] | None) -> int:
    found = {
        f"{name}.image_size": section["image_size"]
        for config in configs
        if config
        for name, section in config.items()
        if isinstance(section, Mapping) and "image_size" in section
    }
    for field, value in found.items():
        _positive_int(value, field)
    if image_size is not None:
        image_size = _positive_int(image_size, "image_size")
        conflicting = {k: v for k, v in found.items() if v != image_size}
        if conflicting:
            raise ValueError(f"image_size={image_size} conflicts with the config: {conflicting}.")
        return image_size
    if not found:
        raise ValueError("The image size is not in the configs; pass `--image-size` (Python: `image_size=`).")
    if len(set(found.values())) > 1:
        raise ValueError(f"The configs disagree on the image size: {found}.")
    return _positive_int(next(iter(found.values())), next(iter(found)))


def _check_same_diffusion(dpm: Mapping[str, Any], diti: Mapping[str, Any]) -> None:
    a, b = scheduler_config_from_official(dpm), scheduler_config_from_official(diti)
    diffs = [f"{k}: DDPM {short_repr(a[k])} vs DiTi {short_repr(b[k])}" for k in a if a[k] != b[k]]
    if diffs:
        raise ValueError("The DDPM and DiTi configs have different diffusion_config: " + "; ".join(diffs))


# Long for its docstring and its one pass over the checkpoint's components, each a call to the helpers above.
def convert_official(
    dpm_config: PathLike | Mapping[str, Any],
    dpm_checkpoint: PathLike | Mapping[str, Any] | None,
    diti_config: PathLike | Mapping[str, Any] | None = None,
    diti_checkpoint: PathLike | Mapping[str, Any] | None = None,
    prefer_ema: bool = True,
    image_size: int | None = None,
) -> ConvertedModels:
    r"""
    Converts an official pre-trained DDPM, and optionally a DiTi/PDAE checkpoint trained on it, to diti_hf models.

    Args:
        dpm_config (`str`, `os.PathLike` or `dict`): The official DDPM YAML (`denoise_fn_config`, `diffusion_config`).
        dpm_checkpoint (`str`, `os.PathLike` or `dict`, *optional*): The DDPM checkpoint (`ema_denoise_fn`). If
            `None`, the frozen UNet weights stored in the DiTi decoder are used.
        diti_config (`str`, `os.PathLike` or `dict`, *optional*): The official DiTi YAML (`encoder_config`,
            `ssl_config.k`, ...). Given together with `diti_checkpoint`.
        diti_checkpoint (`str`, `os.PathLike` or `dict`, *optional*): The DiTi checkpoint (`ema_encoder`,
            `ema_decoder`).
        prefer_ema (`bool`, defaults to `True`): Use the `ema_*` weights (falling back to the raw ones with a
            warning); `False` prefers the raw weights.
        image_size (`int`, *optional*): Image size, if no config names it (`train_dataset_config.image_size`).

    Returns:
        [`ConvertedModels`]: `unet`, `scheduler` and, with a DiTi checkpoint, `encoder` and `decoder`, all loaded with
        `strict=True` and in eval mode.

    Examples:
    ```py
    >>> from diti_hf.conversion import convert_official, save_converted
    >>> models = convert_official("dpm_config.yml", "pretrained_dpm_checkpoint.pt", "diti_config.yml",
    ...                           "diti_checkpoint.pt")
    >>> save_converted(models, "converted/")
    ```
    """
    if (diti_config is None) != (diti_checkpoint is None):
        raise ValueError("`diti_config` and `diti_checkpoint` must be given together.")
    if dpm_checkpoint is None and diti_checkpoint is None:
        raise ValueError("Give `dpm_checkpoint`, or a `diti_checkpoint` whose decoder holds the frozen UNet.")
    dpm_yaml = _as_config(dpm_config, "dpm_config")
    diti_yaml = None if diti_config is None else _as_config(diti_config, "diti_config")
    denoise_fn_config = _section(dpm_yaml, "denoise_fn_config", "DDPM config")
    unet_config = unet_config_from_official(denoise_fn_config, _resolve_image_size(image_size, dpm_yaml, diti_yaml))
    new_order = denoise_fn_config.get("use_new_attention_order", False)
    dpm_diffusion = _section(dpm_yaml, "diffusion_config", "DDPM config")
    scheduler = DDIMScheduler.from_config(scheduler_config_from_official(dpm_diffusion))

    ddpm_weights = None
    if dpm_checkpoint is not None:
        checkpoint = _as_checkpoint(dpm_checkpoint)
        ddpm_weights = _select_weights(checkpoint, "denoise_fn", prefer_ema, "The DDPM checkpoint")

    encoder = decoder = None
    if diti_yaml is not None:
        _check_same_diffusion(dpm_diffusion, _section(diti_yaml, "diffusion_config", "DiTi config"))
        encoder_config = encoder_config_from_official(diti_yaml, in_channels=unet_config["in_channels"])
        if encoder_config["sample_size"] != unet_config["sample_size"]:
            raise ValueError(
                f"encoder_config.model={short_repr(diti_yaml['encoder_config'].get('model'))} encodes "
                f"{encoder_config['sample_size']}×{encoder_config['sample_size']} images but the DDPM is converted "
                f"for {unet_config['sample_size']}×{unet_config['sample_size']}."
            )
        checkpoint = _as_checkpoint(diti_checkpoint)
        encoder_weights = _select_weights(checkpoint, "encoder", prefer_ema, "The DiTi checkpoint")
        frozen, trainable = split_official_decoder_state_dict(
            _select_weights(checkpoint, "decoder", prefer_ema, "The DiTi checkpoint")
        )
        if ddpm_weights is None:
            if not frozen:
                raise ValueError("The DiTi decoder holds no frozen UNet weights; give the DDPM checkpoint as well.")
            ddpm_weights = frozen
        elif frozen:  # a decoder saved with only its trainable keys has nothing to compare
            _check_frozen_unet(frozen, ddpm_weights)

    # Every weight is matched against shape-only (meta) models first: the config's sizes cost memory only once
    # the weights are known to fit them.
    with torch.device("meta"):
        unet_reference = UNet2DModel(**unet_config)
        encoder_reference = None if diti_yaml is None else DiTiEncoderModel(**encoder_config)
        decoder_reference = (
            None
            if diti_yaml is None
            else DiTiDecoderModel.from_unet(unet_reference, latent_dim=encoder_config["latent_dim"])
        )
    unet_weights = _convert_unet(ddpm_weights, unet_reference, new_order)
    if diti_yaml is not None:
        encoder_weights = _convert_encoder(encoder_weights, encoder_reference)
        decoder_weights = _convert_decoder(trainable, decoder_reference, new_order)

    unet = UNet2DModel(**unet_config)
    unet.load_state_dict(unet_weights, strict=True)
    if diti_yaml is not None:
        encoder = DiTiEncoderModel(**encoder_config)
        encoder.load_state_dict(encoder_weights, strict=True)
        decoder = DiTiDecoderModel.from_unet(unet, latent_dim=encoder.config.latent_dim)
        decoder.load_state_dict(decoder_weights, strict=True)
        decoder.register_to_config(noise_schedule=noise_schedule_of(scheduler.config))
    models = ConvertedModels(unet=unet, scheduler=scheduler, encoder=encoder, decoder=decoder)
    for model in (unet, encoder, decoder):
        if model is not None:
            model.eval()
    return models


def _as_checkpoint(checkpoint: PathLike | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(checkpoint, Mapping):
        return dict(checkpoint)
    if isinstance(checkpoint, (str, os.PathLike)):
        return load_official_checkpoint(checkpoint)
    raise TypeError(f"a checkpoint must be a path or a dict, got {type(checkpoint).__name__}.")


_COMPONENTS = ("unet", "encoder", "decoder", "scheduler")


def save_converted(models: ConvertedModels, output_dir: PathLike, overwrite: bool = False) -> dict[str, Path]:
    """
    Writes each component with `save_pretrained` (safetensors) to `output_dir/{unet,encoder,decoder,scheduler}`; a
    DiTi/PDAE conversion (with encoder and decoder) is written as a complete `DiTiPipeline` folder.

    Args:
        models ([`ConvertedModels`]): The result of [`convert_official`].
        output_dir (`str` or `os.PathLike`): Target folder (created if needed).
        overwrite (`bool`, defaults to `False`): Replace existing component folders. Without it, existing ones are an
            error, so that an old encoder/decoder is never left next to a newly converted UNet.

    Returns:
        `dict[str, Path]`: The folder of each component written.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output directory {output_dir} exists and is not a directory.")
    existing = [name for name in _COMPONENTS if (output_dir / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"{output_dir} already contains {existing}; choose another directory or overwrite.")
    for name in existing:
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    if models.encoder is not None and models.decoder is not None:
        # A complete DiTi conversion is written as a pipeline folder (model_index.json + components).
        DiTiPipeline(models.unet, models.encoder, models.decoder, models.scheduler).save_pretrained(
            output_dir, safe_serialization=True
        )
        return {name: output_dir / name for name in _COMPONENTS}
    written = {}
    for name in _COMPONENTS:
        component = getattr(models, name)
        if component is not None:
            path = output_dir / name
            component.save_pretrained(path)
            written[name] = path
    return written

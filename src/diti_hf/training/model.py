"""The models the example scripts train, built from their flags: DiTi's encoder + decoder against a frozen DDPM
(`examples/train_diti.py`) and the base DDPM's UNet (`examples/train_ddpm.py`), with the checks a DiTi run passes
before it loads any data, and the partition `--partition auto` fits to the frozen DDPM's loss profile."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config_bounds import check_config_bounds
from ..data import TRANSFORM_PRESETS
from ..evaluation.loss_profile import loss_profile, write_loss_profile
from ..models import compile_denoiser, load_frozen_ddpm
from ..models.decoder import DiTiDecoderModel
from ..models.encoder import ENCODER_PRESETS, DiTiEncoderModel
from ..models.frozen_ddpm import check_unet_memory, eps_function
from ..partition import TimestepPartition, partition_from_profile
from ..pipelines.checks import check_components
from ..pipelines.image_processing_diti import DiTiImageProcessor
from ..safe_io import read_json
from ..sampling import DiffusionCoefficients, noise_schedule_of
from .args import ScriptArgumentError
from .loss import IntervalLossNormalizer, diti_loss
from .run import TRAINED_WEIGHT_COPIES

# Encoder preset per training resolution when no architecture is given (docs/method.md §2).
PRESET_FOR_RESOLUTION = {32: "small32", 64: "celeba64", 128: "ffhq128"}

# UNet2DModel architectures. "tiny": the test UNet; "small32": measured on 2 CPU cores (docs/cpu-training-notes.md:
# recognisable shapes after ~40 min); "ddpm-cifar10": google/ddpm-cifar10-32's.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 16,
        "norm_num_groups": 16,
    },
    "small32": {
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "attention_head_dim": 32,
        "norm_num_groups": 32,
    },
    "ddpm-cifar10": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": None,
        "norm_num_groups": 32,
        "dropout": 0.1,
    },
}


# ------------------------------------------------------------------------------------------------ DiTi: checks
@dataclasses.dataclass
class DiTiPreflight:
    r"""
    What [`diti_preflight`] found.

    Args:
        problems (`list[str]`): One message per impossible flag or flag/DDPM mismatch, each starting with the flag;
            empty when the run can start.
        resolution (`int`, *optional*): The training resolution (`--resolution`, else the `--preprocessing`
            preset's, else the UNet's `sample_size`), once the flags were checked against a frozen UNet.
    """

    problems: list[str]
    resolution: int | None = None


def diti_preflight(
    args: argparse.Namespace, unet: nn.Module | None = None, num_train_timesteps: int | None = None
) -> DiTiPreflight:
    r"""
    Checks the flags of a DiTi training run before anything expensive. Without `unet`, the DiTi flags alone (at
    parse time, before the frozen DDPM is loaded); with the frozen `unet` and its `T`, also every mismatch between
    them that would otherwise surface only in training or in the final validation: `T` against `--stages` and
    `--num_chunks`, channels, the training resolution against the UNet's `sample_size` (the pipeline samples at the
    UNet's size), the encoder preset's resolution, the validation swap ranges, and an encoder that cannot encode
    images of the training resolution.

    Args:
        args (`argparse.Namespace`): The parsed flags of `examples/train_diti.py`.
        unet (`UNet2DModel`, *optional*): The frozen UNet.
        num_train_timesteps (`int`, *optional*): Its `T` (required with `unet`).

    Returns:
        [`DiTiPreflight`]: the problems found and, with `unet`, the training resolution.
    """
    problems = _flag_problems(args)
    if unet is None or problems:
        return DiTiPreflight(problems)
    T = num_train_timesteps
    if args.stages is not None and args.stages[-1] != T:
        problems.append(f"--stages: must end at the DDPM's T={T}, got {args.stages}")
    if args.num_chunks > T:
        problems.append(f"--num_chunks (k): must be <= T={T}, got {args.num_chunks}")
    config = unet.config
    resolution = args.resolution
    if resolution is None:
        preset = TRANSFORM_PRESETS.get(args.preprocessing or "", {})
        resolution = preset.get("resolution") or config.sample_size
    if not isinstance(resolution, int):
        problems.append("--resolution: the UNet config has no integer sample_size; pass --resolution")
        return DiTiPreflight(problems)
    if config.out_channels != config.in_channels:
        problems.append(
            f"--pretrained_unet: the UNet has in_channels={config.in_channels} but out_channels={config.out_channels}; "
            "DiTi needs an ε-prediction UNet (a learned variance is not supported)"
        )
    size = config.sample_size
    if isinstance(size, int) and size != resolution:
        flag = "--resolution" if args.resolution is not None else f"--preprocessing {args.preprocessing}"
        problems.append(
            f"{flag}: trains at {resolution}×{resolution} but the frozen UNet ({args.pretrained_unet}) has "
            f"sample_size={size}; DiTi trains and samples at the DDPM's resolution: use --resolution {size} or omit it"
        )
    preset = args.encoder_preset
    if preset is not None and ENCODER_PRESETS[preset]["sample_size"] != resolution:
        problems.append(
            f"--encoder_preset: {preset} is the encoder for {ENCODER_PRESETS[preset]['sample_size']}×"
            f"{ENCODER_PRESETS[preset]['sample_size']} images, but training is at {resolution}×{resolution}; choose "
            "the preset of that size (or omit it), or give --encoder_block_out_channels"
        )
    try:
        swap_ranges(args, T)
    except ScriptArgumentError as error:
        problems.append(str(error))
    if not problems:  # the encoder is only built from flags that passed the checks above
        problems += _encoder_problems(args, resolution, T, config.in_channels)
    return DiTiPreflight(problems, resolution)


def _flag_problems(args: argparse.Namespace) -> list[str]:
    """The DiTi flags' own problems (`T` is checked against the DDPM later; here T = the last stage end)."""
    problems = []
    if args.latent_dim < 1:
        problems.append(f"--latent_dim: must be >= 1, got {args.latent_dim}")
    elif not 1 <= args.num_chunks <= args.latent_dim:
        problems.append(f"--num_chunks (k): must lie in [1, --latent_dim={args.latent_dim}], got {args.num_chunks}")
    elif (args.stages is None) != (args.dims_per_stage is None):
        problems.append("--stages/--dims_per_stage: give both or neither")
    elif args.partition == "auto" and args.stages is not None:
        problems.append("--partition auto: fits the stages itself; drop --stages/--dims_per_stage")
    elif args.stages is not None:
        try:
            TimestepPartition(args.latent_dim, args.num_chunks, args.stages[-1], args.stages, args.dims_per_stage)
        except ValueError as error:
            problems.append(f"--stages/--dims_per_stage: {error}")
    if args.loss_profile_images < 0 or (args.partition == "auto" and args.loss_profile_images < 1):
        need = ">= 1 with --partition auto" if args.partition == "auto" else ">= 0"
        problems.append(f"--loss_profile_images: must be {need}, got {args.loss_profile_images}")
    if args.partition_stages < 1:
        problems.append(f"--partition_stages: must be >= 1, got {args.partition_stages}")
    if args.validation_inference_steps < 1:
        problems.append(f"--validation_inference_steps: must be >= 1, got {args.validation_inference_steps}")
    for lo, hi in args.validation_swap_timesteps or ():
        if not 0 <= lo < hi:
            problems.append(f"--validation_swap_timesteps {lo} {hi}: expected 0 <= LO < HI")
    if args.decoder_dropout is not None and not 0 <= args.decoder_dropout < 1:
        problems.append(f"--decoder_dropout: must lie in [0, 1), got {args.decoder_dropout}")
    return problems


def _encoder_problems(
    args: argparse.Namespace, resolution: int, num_train_timesteps: int, in_channels: int
) -> list[str]:
    """Whether the flags' encoder builds and encodes one image of the training resolution."""
    # a throw-away encoder: the random stream, and so the real encoder's initialisation, is left unchanged
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            encoder = build_encoder(args, resolution, num_train_timesteps, in_channels)
        except ScriptArgumentError as error:
            return [str(error)]
        try:
            encoder(torch.zeros(1, in_channels, resolution, resolution))
        except RuntimeError as error:
            return [f"encoder (--encoder_*): cannot encode {resolution}×{resolution} images: {error}"]
    return []


def swap_ranges(args: argparse.Namespace, num_train_timesteps: int) -> list[tuple[int, int]]:
    r"""
    The time-step ranges swapped in the validation grid: `--validation_swap_timesteps`, else the lower and upper half
    of `[0, T)`.

    Raises:
        [`ScriptArgumentError`] if a range exceeds `T`.
    """
    if args.validation_swap_timesteps:
        ranges = [(lo, hi) for lo, hi in args.validation_swap_timesteps]
        bad = [r for r in ranges if r[1] > num_train_timesteps]
        if bad:
            raise ScriptArgumentError(f"--validation_swap_timesteps: {bad} exceed T={num_train_timesteps}")
        return ranges
    half = num_train_timesteps // 2
    return [(0, half), (half, num_train_timesteps)]


# ----------------------------------------------------------------------------------------------- DiTi: frozen DDPM
def frozen_ddpm_source(args: argparse.Namespace) -> dict[str, str | None]:
    """The arguments of `diti_hf.models.load_frozen_ddpm` that `--pretrained_unet` and its flags give."""
    return {
        "pretrained_model_name_or_path": args.pretrained_unet,
        "unet_subfolder": args.unet_subfolder,
        "scheduler_subfolder": args.scheduler_subfolder,
        "revision": args.revision,
    }


def load_frozen_ddpm_from_args(args: argparse.Namespace, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    r"""
    The frozen UNet and its noise-schedule config (see `diti_hf.models.load_frozen_ddpm`): both configs pass the
    pipeline loader's bounds, and the weights this run holds on `device` (the frozen UNet, plus a decoder of about its
    size with its gradients, Adam moments and EMA) must fit there, before any weight is loaded.

    Raises:
        [`ScriptArgumentError`] naming `--pretrained_unet`.
    """
    try:
        return load_frozen_ddpm(
            **frozen_ddpm_source(args),
            cache_dir=args.cache_dir,
            device=device,
            memory_copies=1 + TRAINED_WEIGHT_COPIES,
        )
    except ValueError as error:
        raise ScriptArgumentError(f"--pretrained_unet: {error}") from error


def profile_and_partition(
    args: argparse.Namespace,
    accelerator: Any,
    unet: nn.Module,
    coefficients: Any,
    images: torch.Tensor,
    logger: logging.Logger,
) -> tuple[dict[str, Any] | None, TimestepPartition | None]:
    r"""
    The frozen DDPM's loss profile on `images` and, with `--partition auto`, the partition fitted to it (both written
    to `--output_dir/loss_profile.json|png`). A resumed run reuses the partition recorded there, so that it matches
    the checkpointed encoder. Every process gets the main process's result.

    Returns:
        `tuple`: the profile (`None` with `--loss_profile_images 0`) and the fitted partition (`None` unless
        `--partition auto`).
    """
    from accelerate.utils import broadcast_object_list

    if args.loss_profile_images == 0:
        return None, None
    record = Path(args.output_dir) / "loss_profile.json"
    result = [None]
    if accelerator.is_main_process:
        if args.partition == "auto" and record.is_file() and args.resume_from_checkpoint:
            payload = read_json(record, "the recorded loss profile")
            logger.info("--partition auto: reusing the partition recorded in %s", record)
        else:
            profile = loss_profile(eps_function(unet, coefficients), images, coefficients, seed=args.seed)
            partition = None
            if args.partition == "auto":
                partition = partition_from_profile(
                    profile, args.latent_dim, args.num_chunks, args.partition_stages, args.partition_signal,
                    coefficients.num_train_timesteps,
                )  # fmt: skip
            write_loss_profile(profile, args.output_dir, partition)
            payload = {"profile": profile, "partition": None if partition is None else partition.to_dict()}
        result = [payload]
    broadcast_object_list(result)
    payload = result[0]
    partition = None
    if args.partition == "auto":
        partition = TimestepPartition.from_dict(payload["partition"])
        logger.info("--partition auto: stages %s, dims per stage %s", partition.stages, partition.dims_per_stage)
    return payload["profile"], partition


# --------------------------------------------------------------------------------------------------- DiTi: models
def build_encoder(
    args: argparse.Namespace,
    resolution: int,
    num_train_timesteps: int,
    in_channels: int,
    partition: TimestepPartition | None = None,
) -> nn.Module:
    r"""
    The `DiTiEncoderModel` from a preset and/or explicit fields (`--encoder_*`); the partition is recorded in its
    config.

    Args:
        partition (`TimestepPartition`, *optional*): The stages fitted by `--partition auto` (default: the flags').

    Raises:
        [`ScriptArgumentError`] naming the flags of an impossible encoder.
    """
    preset = args.encoder_preset
    if preset is None and args.encoder_block_out_channels is None:
        preset = PRESET_FOR_RESOLUTION.get(resolution)
        if preset is None:
            raise ScriptArgumentError(
                f"--encoder_preset: no default encoder for resolution {resolution}; pass --encoder_preset or "
                "--encoder_block_out_channels"
            )
    fields = dict(ENCODER_PRESETS[preset]) if preset else {}
    overrides = {
        "block_out_channels": args.encoder_block_out_channels,
        "attention_stages": args.encoder_attention_stages,
        "num_attention_heads": args.encoder_num_attention_heads,
        "norm_num_groups": args.encoder_norm_num_groups,
    }
    fields.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None})
    source = args if partition is None else partition
    stages, dims_per_stage = source.stages, source.dims_per_stage
    fields.update(
        sample_size=resolution,
        in_channels=in_channels,
        latent_dim=args.latent_dim,
        num_chunks=args.num_chunks,
        num_train_timesteps=num_train_timesteps,
        stages=stages,
        dims_per_stage=dims_per_stage,
        mask_mode=args.mask_mode,
    )
    try:
        return DiTiEncoderModel(**fields)
    except ValueError as error:
        raise ScriptArgumentError(f"encoder (--encoder_*, --latent_dim, --num_chunks, --stages): {error}") from error


def init_decoder_from_unet(decoder: nn.Module, unet: nn.Module) -> None:
    """Copies the frozen up path (mid block, up blocks, output norm) into the decoder; `conv_out` stays zero."""
    trainable = ("mid_block.", "up_blocks.", "conv_norm_out.")
    source = {k: v for k, v in unet.state_dict().items() if k.startswith(trainable)}
    missing, unexpected = decoder.load_state_dict(source, strict=False)
    leftover = [k for k in missing if not (k.startswith(("label_emb.", "conv_out.")) or ".z_emb_proj." in k)]
    if unexpected or leftover:
        raise RuntimeError(f"decoder/UNet mismatch: unexpected {unexpected}, not initialised {leftover}")


class DiTiTrainingModel(nn.Module):
    r"""
    Encoder and decoder as one module, so that DDP wraps (and all-reduces) them once per step. The frozen UNet is
    an argument of `forward`, not a sub-module: it needs no gradient synchronisation and no optimizer state.

    Args:
        encoder (`DiTiEncoderModel`): The encoder; its partition ties chunks of `z` to time-steps.
        decoder (`DiTiDecoderModel`): The decoder.
        loss_weighting (`str`, defaults to `"official"`): One of `LOSS_WEIGHTINGS`; `"interval"` rescales each
            chunk's samples with an [`IntervalLossNormalizer`].
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, loss_weighting: str = "official"):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        num_chunks = encoder.partition.num_chunks
        self.normalizer = IntervalLossNormalizer(num_chunks) if loss_weighting == "interval" else None

    def forward(
        self, images: torch.Tensor, unet: nn.Module, coefficients: Any, mode: str, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""
        The loss of one batch of `images` in [-1, 1], the detached per-sample losses and their time-steps.

        Args:
            unet (`UNet2DModel`): The frozen UNet.
            coefficients (`DiffusionCoefficients`): Its schedule, on the images' device.
            mode (`str`): One of `LOSS_MODES`.
            generator (`torch.Generator`): This process's stream of time-steps and noise.
        """
        # nanoGPT order: z = E(x_0) → t, ε ~ generator → x_t → frozen ε_θ and features → mask z by t → G → loss.
        partition = self.encoder.partition
        z = self.encoder(images).z
        out = diti_loss(unet, self.decoder, z, images, partition, coefficients, mode=mode, generator=generator)
        loss = out.loss
        if self.normalizer is not None:
            loss = self.normalizer(out.per_sample, partition.chunk_of(out.timesteps))
        return loss, out.per_sample.detach(), out.timesteps


def ddim_scheduler(config: dict[str, Any]) -> Any:
    """The sampling scheduler of the final pipeline: the DDPM's betas on the official DDIM grid (docs/method.md §7)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config, timestep_spacing="leading", set_alpha_to_one=True, clip_sample=True)


def image_processor_for(transform: Any) -> Any:
    r"""
    The pipeline's `DiTiImageProcessor`: the training preprocessing (an `ImageTransform`) without its random parts;
    `None` for models that are not RGB.
    """
    if transform.num_channels != 3:
        return None
    box = transform.crop_box
    return DiTiImageProcessor(
        resolution=transform.resolution,
        crop_box=None if box is None else [box.top, box.left, box.height, box.width],
        interpolation=transform.interpolation,
    )


def build_diti_model(
    args: argparse.Namespace,
    unet: nn.Module,
    scheduler_config: dict[str, Any],
    resolution: int,
    transform: Any,
    partition: TimestepPartition | None = None,
) -> DiTiTrainingModel:
    r"""
    The encoder and decoder (the decoder shaped after the frozen UNet), checked now as the pipeline they will form at
    the end of training, in training mode.

    Args:
        args (`argparse.Namespace`): The parsed flags of `examples/train_diti.py`.
        unet (`UNet2DModel`): The frozen UNet.
        scheduler_config (`dict`): Its noise-schedule config.
        resolution (`int`): The training resolution.
        transform (`ImageTransform`): The training preprocessing (it sets the pipeline's image processor).
        partition (`TimestepPartition`, *optional*): The stages fitted by `--partition auto` (default: the flags').

    Raises:
        [`ScriptArgumentError`] for an impossible encoder or a pipeline the components would not form.
    """
    T = DiffusionCoefficients.from_scheduler_config(scheduler_config).num_train_timesteps
    encoder = build_encoder(args, resolution, T, unet.config.in_channels, partition)
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=args.latent_dim, dropout=args.decoder_dropout)
    decoder.register_to_config(noise_schedule=noise_schedule_of(scheduler_config))
    if args.init_decoder_from_unet:
        init_decoder_from_unet(decoder, unet)
    if args.gradient_checkpointing:
        decoder.enable_gradient_checkpointing()
    if args.compile:
        encoder.compile(backend=args.compile_backend)
        compile_denoiser(unet, decoder, backend=args.compile_backend)
    try:  # the checks of the DiTiPipeline constructor, now instead of after training
        check_components(unet, encoder, decoder, ddim_scheduler(scheduler_config), image_processor_for(transform))
        decoder.check_unet(unet)
    except (TypeError, ValueError) as error:
        raise ScriptArgumentError(f"the pipeline this run would save: {error}") from error
    return DiTiTrainingModel(encoder, decoder, args.loss_weighting).train()


# ------------------------------------------------------------------------------------------------ the base DDPM
def build_unet(
    args: argparse.Namespace, resolution: int, in_channels: int, device: str | torch.device = "cpu"
) -> nn.Module:
    r"""
    The `UNet2DModel` of `examples/train_ddpm.py` from `--unet_config` or `--unet_preset`, with the overrides applied.
    Its config passes the pipeline loader's bounds and its training memory on `device` is estimated from the config
    before the UNet is built.

    Raises:
        [`ScriptArgumentError`] naming the flag or the config.
    """
    from diffusers import UNet2DModel

    if args.unet_config is not None:
        try:
            config = read_json(args.unet_config, "--unet_config")
        except (OSError, ValueError) as error:
            raise ScriptArgumentError(f"--unet_config: {error}") from error
        if not isinstance(config, dict):
            raise ScriptArgumentError(f"--unet_config: {args.unet_config!r} is not a JSON object")
        config = {k: v for k, v in config.items() if not k.startswith("_")}
    else:
        config = dict(UNET_PRESETS[args.unet_preset])
    if args.block_out_channels is not None:
        config["block_out_channels"] = tuple(args.block_out_channels)
    levels = len(config["block_out_channels"])
    if args.attention_levels is not None:
        bad = [i for i in args.attention_levels if not 0 <= i < levels]
        if bad:
            raise ScriptArgumentError(f"--attention_levels: {bad} outside [0, {levels})")
        config["down_block_types"] = tuple(
            "AttnDownBlock2D" if i in args.attention_levels else "DownBlock2D" for i in range(levels)
        )
        config["up_block_types"] = tuple(
            "AttnUpBlock2D" if i in args.attention_levels else "UpBlock2D" for i in reversed(range(levels))
        )
    elif args.block_out_channels is not None and len(config["down_block_types"]) != levels:
        raise ScriptArgumentError(
            f"--block_out_channels: {levels} levels but the preset has {len(config['down_block_types'])}; "
            "pass --attention_levels too"
        )
    if args.layers_per_block is not None:
        config["layers_per_block"] = args.layers_per_block
    if args.dropout is not None:
        config["dropout"] = args.dropout
    config.update(sample_size=resolution, in_channels=in_channels, out_channels=in_channels)
    where = "UNet config (--unet_preset/--unet_config and overrides)"
    try:  # messages that start with `where`
        check_config_bounds(config, where)
        check_unet_memory(config, TRAINED_WEIGHT_COPIES, device, where)
    except ValueError as error:
        raise ScriptArgumentError(str(error)) from error
    try:
        return UNet2DModel(**config)
    except (ValueError, TypeError) as error:
        raise ScriptArgumentError(f"{where}: {error}") from error


class DDPMTrainingModel(nn.Module):
    r"""
    The loss of a UNet predicting the scheduler's `prediction_type` (ε or v), per sample (for the per-t histogram)
    and averaged.

    Args:
        unet (`UNet2DModel`): The trained UNet.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(
        self, images: torch.Tensor, noise_scheduler: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mean loss of `images` in [-1, 1], the detached per-sample losses and their time-steps."""
        batch = images.shape[0]
        T = noise_scheduler.config.num_train_timesteps
        # t and ε come from this process's own generator (on CPU, so a resumed run redraws them exactly).
        timesteps = torch.randint(0, T, (batch,), generator=generator).to(images.device)
        noise = torch.randn(images.shape, generator=generator, dtype=torch.float32).to(images.device, images.dtype)
        noisy = noise_scheduler.add_noise(images, noise, timesteps)
        prediction = self.unet(noisy, timesteps).sample
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(images, noise, timesteps)
        else:
            target = noise
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
        return per_sample.mean(), per_sample.detach(), timesteps

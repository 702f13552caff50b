#!/usr/bin/env python
"""Train a DiTi encoder and decoder against a frozen DDPM, with 🤗 accelerate on 🤗 datasets.

One CPU to many GPUs / nodes (accelerate's DDP, optionally FSDP or DeepSpeed), mixed precision, gradient
accumulation, EMA, crash-safe resumable checkpoints, tensorboard logging (loss, lr, throughput, the per-t loss
histogram, reconstruction and swap grids), and a final `DiTiPipeline` folder (EMA weights).

    accelerate launch examples/train_diti.py --pretrained_unet ./ddpm-shapes --dataset_name diti-shapes \
        --resolution 32 --latent_dim 64 --num_chunks 16 --output_dir ./diti-shapes

`--num_chunks 1` trains the PDAE baseline with the same code. See examples/README.md for the paper's setting.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

import torch
from torch import nn

from diti_hf.evaluation.loss_profile import PROFILE_SIGNALS
from diti_hf.models.encoder import ENCODER_PRESETS
from diti_hf.partition import MASK_MODES, TimestepPartition
from diti_hf.training.args import (
    OneLineArgumentParser,
    ScriptArgumentError,
    add_data_arguments,
    add_training_arguments,
    check_data_arguments,
    check_training_arguments,
)
from diti_hf.training.loss import LOSS_MODES, LOSS_WEIGHTINGS
from diti_hf.training.run import run_script

logger = logging.getLogger("train_diti")

# Encoder preset per training resolution when no architecture is given (docs/method.md §2).
PRESET_FOR_RESOLUTION = {32: "small32", 64: "celeba64", 128: "ffhq128"}


def build_parser() -> OneLineArgumentParser:
    """The argument parser (every flag has a help text)."""
    parser = OneLineArgumentParser(
        prog="train_diti.py",
        description="Train DiTi (ICLR 2024) encoder + decoder against a frozen diffusers UNet2DModel.",
    )
    group = parser.add_argument_group("frozen DDPM")
    group.add_argument(
        "--pretrained_unet",
        type=str,
        required=True,
        help=(
            "Hub id or local folder of the frozen DDPM: a diffusers pipeline/UNet folder (e.g. google/ddpm-cifar10-32, "
            "the output of train_ddpm.py) or a folder written by `diti-hf convert`."
        ),
    )
    group.add_argument(
        "--unet_subfolder",
        type=str,
        default=None,
        help="Subfolder of the UNet (default: `unet` if present, else root).",
    )
    group.add_argument(
        "--scheduler_subfolder",
        type=str,
        default=None,
        help="Subfolder of the noise-schedule config (default: `scheduler`, the UNet's folder, the root; else linear).",
    )
    group.add_argument("--revision", type=str, default=None, help="Hub revision of --pretrained_unet.")

    group = parser.add_argument_group("DiTi (docs/method.md §5-6)")
    group.add_argument("--latent_dim", type=int, default=512, help="Width d of the representation z.")
    group.add_argument("--num_chunks", "--k", type=int, default=64, help="Chunks k of z (1 = the PDAE baseline).")
    group.add_argument(
        "--stages", type=int, nargs="+", default=None, help="Staged partition: increasing stage end-times, last = T."
    )
    group.add_argument(
        "--dims_per_stage", type=int, nargs="+", default=None, help="Staged partition: dims per stage, sum = d."
    )
    group.add_argument(
        "--partition",
        type=str,
        default="uniform",
        choices=("uniform", "auto"),
        help=(
            "How dims are spread over the chunks when --stages is not given: `uniform` (d/k each) or `auto` (a staged "
            "partition fitted to the frozen DDPM's loss profile on the first --loss_profile_images training images; "
            "see TimestepPartition.from_loss_profile)."
        ),
    )
    group.add_argument("--partition_stages", type=int, default=4, help="Number of stages `--partition auto` aims at.")
    group.add_argument(
        "--partition_signal",
        type=str,
        default="weighted_eps_error",
        choices=PROFILE_SIGNALS,
        help="Curve of the loss profile that sets where `--partition auto` puts dims.",
    )
    group.add_argument(
        "--loss_profile_images",
        type=int,
        default=128,
        help="Training images of the frozen DDPM's loss profile, logged once at start (0: skip; auto needs > 0).",
    )
    group.add_argument(
        "--mode", type=str, default="stop_grad", choices=LOSS_MODES, help="Loss mode (base, stop_grad or dual)."
    )
    group.add_argument(
        "--mask_mode",
        type=str,
        default="cumulative",
        choices=MASK_MODES,
        help=(
            "What the decoder sees at time t: every chunk up to t's (`cumulative`, the official DiTi) or t's chunk "
            "alone (`interval`). Recorded in the encoder config, so the pipeline samples with the same masks."
        ),
    )
    group.add_argument(
        "--loss_weighting",
        type=str,
        default="official",
        choices=LOSS_WEIGHTINGS,
        help=(
            "`official`: weight[t] alone; `interval`: also rescale each chunk's samples to the same running mean "
            "loss, so late intervals get gradients of their own size (see IntervalLossNormalizer)."
        ),
    )
    group.add_argument(
        "--encoder_preset",
        type=str,
        default=None,
        choices=sorted(ENCODER_PRESETS),
        help="Encoder architecture (default: small32 / celeba64 / ffhq128 by --resolution).",
    )
    group.add_argument(
        "--encoder_block_out_channels", type=int, nargs="+", default=None, help="Encoder channels per stride-2 stage."
    )
    group.add_argument(
        "--encoder_attention_stages", type=int, nargs="*", default=None, help="Encoder stages followed by attention."
    )
    group.add_argument("--encoder_num_attention_heads", type=int, default=None, help="Heads of the encoder attention.")
    group.add_argument("--encoder_norm_num_groups", type=int, default=None, help="GroupNorm groups of the encoder.")
    group.add_argument(
        "--decoder_dropout", type=float, default=None, help="Dropout of the decoder's resnets (default: the UNet's)."
    )
    group.add_argument(
        "--init_decoder_from_unet",
        action="store_true",
        help=(
            "Experiment: start the decoder's trainable mid/up path from the frozen UNet's weights (the output conv "
            "stays zero, so G ≡ 0 at step 0) instead of the official random initialisation."
        ),
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help=(
            "torch.compile the encoder, the decoder and every UNet block DiTi runs (as DiTiPipeline.compile_models); "
            "the first steps pay the compilation."
        ),
    )
    group.add_argument("--compile_backend", type=str, default="inductor", help="torch.compile backend of --compile.")
    group.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="Recompute decoder activations in backward (less memory).",
    )
    group.add_argument(
        "--validation_inference_steps", type=int, default=20, help="DDIM steps of validation reconstructions/swaps."
    )
    group.add_argument(
        "--validation_swap_timesteps",
        type=int,
        nargs=2,
        action="append",
        default=None,
        metavar=("LO", "HI"),
        help="A time-step range [LO, HI) swapped in the validation grid (repeatable; default: the lower and upper "
        "half of [0, T)).",
    )
    add_data_arguments(parser)
    add_training_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags; an impossible flag exits with code 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = list(sys.argv[1:] if argv is None else argv)
    args.histogram_steps = args.histogram_steps or 10 * args.logging_steps

    problems = check_data_arguments(args) + check_training_arguments(args)
    problems += _check_diti_arguments(args)
    if problems:
        parser.error("; ".join(problems))
    return args


def _check_diti_arguments(args: argparse.Namespace) -> list[str]:
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
        try:  # T is checked against the DDPM later; here T = the last stage end
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


# ------------------------------------------------------------------------------------------------- model pieces
def frozen_ddpm_source(args: argparse.Namespace) -> dict:
    """The arguments of `diti_hf.models.load_frozen_ddpm` that `--pretrained_unet` and its flags give."""
    return {
        "pretrained_model_name_or_path": args.pretrained_unet,
        "unet_subfolder": args.unet_subfolder,
        "scheduler_subfolder": args.scheduler_subfolder,
        "revision": args.revision,
    }


def load_frozen_ddpm(args: argparse.Namespace, device: str | torch.device = "cpu"):
    r"""
    The frozen UNet and its noise-schedule config (see `diti_hf.models.load_frozen_ddpm`): both configs pass the
    pipeline loader's bounds, and the weights this run holds on `device` (the frozen UNet, plus a decoder of about its
    size with its gradients, Adam moments and EMA) must fit there, before any weight is loaded.
    """
    from diti_hf.models import load_frozen_ddpm as load
    from diti_hf.training.run import TRAINED_WEIGHT_COPIES

    try:
        return load(
            **frozen_ddpm_source(args),
            cache_dir=args.cache_dir,
            device=device,
            memory_copies=1 + TRAINED_WEIGHT_COPIES,
        )
    except ValueError as error:
        raise ScriptArgumentError(f"--pretrained_unet: {error}") from error


def profile_and_partition(args: argparse.Namespace, accelerator, unet, coefficients, images) -> dict | None:
    r"""
    The frozen DDPM's loss profile on `images` and, with `--partition auto`, the partition fitted to it (written to
    `--output_dir/loss_profile.json|png`). A resumed run reuses the partition recorded there, so that it matches the
    checkpointed encoder. Every process gets the main process's result.
    """
    import json

    from accelerate.utils import broadcast_object_list

    from diti_hf.evaluation.loss_profile import loss_profile, partition_from_profile, write_loss_profile
    from diti_hf.models.frozen_ddpm import eps_function

    if args.loss_profile_images == 0:
        return None
    record = Path(args.output_dir) / "loss_profile.json"
    result = [None]
    if accelerator.is_main_process:
        if args.partition == "auto" and record.is_file() and args.resume_from_checkpoint:
            payload = json.loads(record.read_text())
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
    if args.partition == "auto":
        partition = TimestepPartition.from_dict(payload["partition"])
        args.stages, args.dims_per_stage = partition.stages, partition.dims_per_stage
        logger.info("--partition auto: stages %s, dims per stage %s", args.stages, args.dims_per_stage)
    return payload


def build_encoder(args: argparse.Namespace, resolution: int, num_train_timesteps: int, in_channels: int):
    """The encoder from a preset and/or explicit fields; the partition is recorded in its config."""
    from diti_hf import DiTiEncoderModel

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
    fields.update(
        sample_size=resolution,
        in_channels=in_channels,
        latent_dim=args.latent_dim,
        num_chunks=args.num_chunks,
        num_train_timesteps=num_train_timesteps,
        stages=args.stages,
        dims_per_stage=args.dims_per_stage,
        mask_mode=args.mask_mode,
    )
    try:
        return DiTiEncoderModel(**fields)
    except ValueError as error:
        raise ScriptArgumentError(f"encoder (--encoder_*, --latent_dim, --num_chunks, --stages): {error}") from error


def check_against_ddpm(args: argparse.Namespace, unet, resolution: int, num_train_timesteps: int) -> None:
    r"""
    Raises [`ScriptArgumentError`] for every mismatch between the flags and the frozen DDPM that would otherwise
    surface only in training or in the final validation: channels, the training resolution against the UNet's
    `sample_size` (the pipeline samples at the UNet's size), the encoder preset's resolution, the validation swap
    ranges against `T`, and an encoder that cannot encode `resolution`-sized images.
    """
    config = unet.config
    if config.out_channels != config.in_channels:
        raise ScriptArgumentError(
            f"--pretrained_unet: the UNet has in_channels={config.in_channels} but out_channels={config.out_channels}; "
            "DiTi needs an ε-prediction UNet (a learned variance is not supported)"
        )
    size = config.sample_size
    if isinstance(size, int) and size != resolution:
        flag = "--resolution" if args.resolution is not None else f"--preprocessing {args.preprocessing}"
        raise ScriptArgumentError(
            f"{flag}: trains at {resolution}×{resolution} but the frozen UNet ({args.pretrained_unet}) has "
            f"sample_size={size}; DiTi trains and samples at the DDPM's resolution: use --resolution {size} or omit it"
        )
    preset = args.encoder_preset
    if preset is not None and ENCODER_PRESETS[preset]["sample_size"] != resolution:
        raise ScriptArgumentError(
            f"--encoder_preset: {preset} is the encoder for {ENCODER_PRESETS[preset]['sample_size']}×"
            f"{ENCODER_PRESETS[preset]['sample_size']} images, but training is at {resolution}×{resolution}; choose "
            "the preset of that size (or omit it), or give --encoder_block_out_channels"
        )
    swap_ranges(args, num_train_timesteps)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # a throw-away encoder: the real one's init is unchanged
        encoder = build_encoder(args, resolution, num_train_timesteps, config.in_channels)
        try:
            encoder(torch.zeros(1, config.in_channels, resolution, resolution))
        except RuntimeError as error:
            raise ScriptArgumentError(
                f"encoder (--encoder_*): cannot encode {resolution}×{resolution} images: {error}"
            ) from error


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
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, loss_weighting: str = "official"):
        from diti_hf.training import IntervalLossNormalizer

        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        num_chunks = encoder.partition.num_chunks
        self.normalizer = IntervalLossNormalizer(num_chunks) if loss_weighting == "interval" else None

    def forward(self, images, unet, coefficients, mode: str, generator: torch.Generator):
        from diti_hf.training import diti_loss

        # nanoGPT order: z = E(x_0) → t, ε ~ generator → x_t → frozen ε_θ and features → mask z by t → G → loss.
        partition = self.encoder.partition
        z = self.encoder(images).z
        out = diti_loss(unet, self.decoder, z, images, partition, coefficients, mode=mode, generator=generator)
        loss = out.loss
        if self.normalizer is not None:
            loss = self.normalizer(out.per_sample, partition.chunk_of(out.timesteps))
        return loss, out.per_sample.detach(), out.timesteps


def ddim_scheduler(config: dict):
    """The sampling scheduler of the final pipeline: the DDPM's betas on the official DDIM grid (docs/method.md §7)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config, timestep_spacing="leading", set_alpha_to_one=True, clip_sample=True)


def image_processor_for(transform):
    """The pipeline's image processor: the training preprocessing without its random parts (RGB models only)."""
    from diti_hf.pipelines.image_processing_diti import DiTiImageProcessor

    if transform.num_channels != 3:
        return None
    box = transform.crop_box
    return DiTiImageProcessor(
        resolution=transform.resolution,
        crop_box=None if box is None else [box.top, box.left, box.height, box.width],
        interpolation=transform.interpolation,
    )


def card_kwargs(args: argparse.Namespace) -> dict:
    """Model-card facts of the run: the Hub data set (if one), the training command (token redacted), the repo."""
    hub_dataset = (
        args.dataset_name
        if args.dataset_name and args.dataset_name.count("/") == 1 and not os.path.exists(args.dataset_name)
        else None
    )
    argv = list(args.command_line)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--hub_token":
            argv[i + 1] = "***"
    argv = ["***" if a.startswith("--hub_token=") else a for a in argv]
    return {
        "datasets": [hub_dataset] if hub_dataset else None,
        "training_command": "accelerate launch examples/train_diti.py " + shlex.join(argv),
        "repo_id": args.hub_model_id,
    }


def swap_ranges(args: argparse.Namespace, num_train_timesteps: int) -> list[tuple[int, int]]:
    if args.validation_swap_timesteps:
        ranges = [(lo, hi) for lo, hi in args.validation_swap_timesteps]
        bad = [r for r in ranges if r[1] > num_train_timesteps]
        if bad:
            raise ScriptArgumentError(f"--validation_swap_timesteps: {bad} exceed T={num_train_timesteps}")
        return ranges
    half = num_train_timesteps // 2
    return [(0, half), (half, num_train_timesteps)]


@torch.no_grad()
def log_validation(accelerator, model, ema, unet, scheduler, images, args, step: int) -> dict[str, float]:
    r"""
    Reconstructions and swaps of the fixed validation batch with the EMA weights, as one grid: originals,
    reconstructions, then for each swap range the original with that range's chunks taken from its neighbour
    (the last row).
    """
    from diti_hf import DiTiPipeline
    from diti_hf.training.run import log_image
    from diti_hf.visualization import tensor_grid

    trainer = accelerator.unwrap_model(model)
    ema.store(trainer.parameters())
    ema.copy_to(trainer.parameters())
    trainer.eval()
    try:
        pipe = DiTiPipeline(unet=unet, encoder=trainer.encoder, decoder=trainer.decoder, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        images = images.to(accelerator.device)
        steps = args.validation_inference_steps
        recon = pipe.reconstruct(images, num_inference_steps=steps, output_type="pt").images
        target = images.roll(1, 0)
        ranges = swap_ranges(args, scheduler.config.num_train_timesteps)
        swaps = pipe.swap(images, target, timesteps=ranges, num_inference_steps=steps, output_type="pt").images
        rows = [images / 2 + 0.5, recon] + [swaps[r :: len(ranges)] for r in range(len(ranges))] + [target / 2 + 0.5]
        log_image(accelerator, "validation/original_recon_swaps_target", tensor_grid(rows), step)
        mse = float((recon - (images / 2 + 0.5)).square().mean())
    finally:
        ema.restore(trainer.parameters())
        trainer.train()
    return {"validation/reconstruction_mse": mse}


# ------------------------------------------------------------------------------------------------------ training
def resolution_for(args: argparse.Namespace, unet) -> int:
    """The training resolution: `--resolution`, else the `--preprocessing` preset's, else the UNet's `sample_size`."""
    from diti_hf.data import TRANSFORM_PRESETS

    resolution = args.resolution
    if resolution is None:
        preset = TRANSFORM_PRESETS.get(args.preprocessing or "", {})
        resolution = preset.get("resolution") or unet.config.sample_size
    if not isinstance(resolution, int):
        raise ScriptArgumentError("--resolution: the UNet config has no integer sample_size; pass --resolution")
    return resolution


def build_model(
    args: argparse.Namespace, unet, scheduler_config: dict, resolution: int, transform
) -> DiTiTrainingModel:
    """Encoder + decoder (the decoder initialised from the frozen UNet), checked by the pipeline they will form."""
    from diti_hf import DiffusionCoefficients, DiTiDecoderModel, DiTiPipeline
    from diti_hf.sampling import noise_schedule_of

    T = DiffusionCoefficients.from_scheduler_config(scheduler_config).num_train_timesteps
    encoder = build_encoder(args, resolution, T, unet.config.in_channels)
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=args.latent_dim, dropout=args.decoder_dropout)
    decoder.register_to_config(noise_schedule=noise_schedule_of(scheduler_config))
    if args.init_decoder_from_unet:
        init_decoder_from_unet(decoder, unet)
    if args.gradient_checkpointing:
        decoder.enable_gradient_checkpointing()
    if args.compile:
        from diti_hf.models import compile_denoiser

        encoder.compile(backend=args.compile_backend)
        compile_denoiser(unet, decoder, backend=args.compile_backend)
    try:  # the final pipeline's own consistency checks, now instead of after training
        DiTiPipeline(unet, encoder, decoder, ddim_scheduler(scheduler_config), image_processor_for(transform))
    except (TypeError, ValueError) as error:
        raise ScriptArgumentError(f"the pipeline this run would save: {error}") from error
    return DiTiTrainingModel(encoder, decoder, args.loss_weighting).train()


def log_start(loop, args: argparse.Namespace, partition, profile: dict | None) -> None:
    """The trackers (with the loss profile figure on a fresh run) and the start-up line."""
    from diti_hf.training.run import log_figure, tracker_config

    accelerator = loop.accelerator
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name or "train_diti", config=tracker_config(args))
        if profile is not None and loop.start_step == 0:
            from diti_hf.evaluation.loss_profile import loss_profile_figure

            log_figure(accelerator, "ddpm/loss_profile", loss_profile_figure(profile["profile"], partition), 0)
    layout = (
        f"uniform partition ({partition.latent_dim // partition.num_chunks} dims per chunk)"
        if partition.stages is None
        else f"staged partition (stages {list(partition.stages)}, dims per stage {list(partition.dims_per_stage)})"
    )
    logger.info(
        "training %d steps of %d images (%d per process × %d processes × %d accumulation) from step %d into %s; "
        "lr %g (%s, %d warm-up steps); %s; z: d=%d in k=%d chunks, %s; mode %s, %s masks, %s loss weighting",
        loop.max_train_steps, loop.global_batch, args.train_batch_size, accelerator.num_processes,
        args.gradient_accumulation_steps, loop.start_step, args.output_dir, args.learning_rate, args.lr_scheduler,
        args.lr_warmup_steps, loop.ema_summary(logger), partition.latent_dim, partition.num_chunks, layout, args.mode,
        partition.mask_mode, args.loss_weighting,
    )  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    """Trains and returns the run summary (also written to `output_dir/training_summary.json`)."""
    from accelerate.utils import set_seed

    from diti_hf import DiffusionCoefficients, DiTiPipeline
    from diti_hf.data import validation_batch
    from diti_hf.hub import save_model_card
    from diti_hf.training.args import training_data_from_args
    from diti_hf.training.export import record_run
    from diti_hf.training.run import TrainingLoop, make_accelerator, setup_logging, startup_step

    accelerator = make_accelerator(args)
    setup_logging(accelerator, logger)
    set_seed(args.seed)  # same initial weights on every process (DDP would broadcast rank 0's anyway)

    # ---- the frozen DDPM and its schedule
    unet, scheduler_config = load_frozen_ddpm(args, accelerator.device)
    coefficients = DiffusionCoefficients.from_scheduler_config(scheduler_config)
    T = coefficients.num_train_timesteps
    if args.stages is not None and args.stages[-1] != T:
        raise ScriptArgumentError(f"--stages: must end at the DDPM's T={T}, got {args.stages}")
    if args.num_chunks > T:
        raise ScriptArgumentError(f"--num_chunks (k): must be <= T={T}, got {args.num_chunks}")
    resolution = resolution_for(args, unet)
    check_against_ddpm(args, unet, resolution, T)

    # ---- data: each process reads its own share, in a seeded order that a resumed run replays
    raw, transform, data = training_data_from_args(args, accelerator, resolution, unet.config.in_channels, logger)
    validation_images = None
    if accelerator.is_main_process:
        validation_images = validation_batch(raw, transform, args.num_validation_images, args.image_column)

    # ---- where the frozen DDPM's error lies (and, with --partition auto, the partition fitted to it)
    profile = None
    if args.loss_profile_images:
        with startup_step(logger, f"measuring the DDPM loss profile on {args.loss_profile_images} images"):
            profile_images = validation_batch(raw, transform, args.loss_profile_images, args.image_column)
            profile = profile_and_partition(
                args, accelerator, unet.to(accelerator.device), coefficients, profile_images
            )

    # ---- trainable encoder + decoder; the optimisation (official: Adam 1e-4, β 0.9/0.999, ε 1e-8, no weight decay,
    # no warm-up, EMA 0.9999 from the first step, i.e. --no-ema_warmup; the default EMA warms up so that short runs
    # export trained weights)
    with startup_step(logger, "building the encoder and decoder and preparing the run"):
        model = build_model(args, unet, scheduler_config, resolution, transform)
        loop = TrainingLoop(accelerator, args, model, T, data.batches_per_epoch)
    unet.to(accelerator.device)  # frozen: device placement only, no DDP wrapper
    coefficients = coefficients.to(accelerator.device)
    sampling_scheduler = ddim_scheduler(scheduler_config)
    log_start(loop, args, loop.trainer.encoder.partition, profile)
    if accelerator.is_main_process:  # what `diti-hf export` needs to turn any checkpoint into a pipeline
        record_run(
            args.output_dir, loop.trainer.encoder, loop.trainer.decoder, sampling_scheduler,
            image_processor_for(transform), frozen_ddpm=frozen_ddpm_source(args),
            training_command=card_kwargs(args)["training_command"], global_batch_size=loop.global_batch,
            datasets=card_kwargs(args)["datasets"],
        )  # fmt: skip

    def validate(step: int) -> dict[str, float]:
        return log_validation(
            accelerator, loop.model, loop.ema, unet, sampling_scheduler, validation_images, args, step
        )

    def step_loss(model, images: torch.Tensor, generator: torch.Generator):
        return model(images, unet, coefficients, args.mode, generator)

    loop.train(data, step_loss, validate, desc="train_diti")

    def save_final() -> dict:
        """The complete pipeline folder with the EMA weights, then the final validation (a failure there loses
        nothing)."""
        loop.ema.copy_to(loop.trainer.parameters())
        pipe = DiTiPipeline(
            unet=unet,
            encoder=loop.trainer.encoder,
            decoder=loop.trainer.decoder,
            scheduler=sampling_scheduler,
            image_processor=image_processor_for(transform),
        )
        pipe.save_pretrained(args.output_dir)
        save_model_card(pipe, args.output_dir, **card_kwargs(args))
        metrics = validate(loop.run.global_step)
        accelerator.log(metrics, step=loop.run.global_step)
        return metrics

    return loop.finish(save_final)


if __name__ == "__main__":
    run_script(main, parse_args)

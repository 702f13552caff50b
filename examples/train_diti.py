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

import torch

from diti_hf.models.encoder import ENCODER_PRESETS
from diti_hf.partition import MASK_MODES, PROFILE_SIGNALS
from diti_hf.training.args import (
    OneLineArgumentParser,
    ScriptArgumentError,
    add_data_arguments,
    add_training_arguments,
    check_data_arguments,
    check_training_arguments,
)
from diti_hf.training.loss import LOSS_MODES, LOSS_WEIGHTINGS
from diti_hf.training.model import (
    build_diti_model,
    ddim_scheduler,
    diti_preflight,
    frozen_ddpm_source,
    image_processor_for,
    load_frozen_ddpm_from_args,
    profile_and_partition,
    swap_ranges,
)
from diti_hf.training.run import run_script

logger = logging.getLogger("train_diti")


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

    problems = check_data_arguments(args) + check_training_arguments(args) + diti_preflight(args).problems
    if problems:
        parser.error("; ".join(problems))
    return args


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


@torch.no_grad()
def log_validation(accelerator, model, ema, unet, scheduler, images, args, step: int) -> dict[str, float]:
    r"""
    Reconstructions and swaps of the fixed validation batch with the EMA weights, as one grid: originals,
    reconstructions, then for each swap range the original with that range's chunks taken from its neighbour
    (the last row).
    """
    from diti_hf import DiTiPipeline
    from diti_hf.training.ema import ema_weights
    from diti_hf.training.reporting import log_image
    from diti_hf.visualization import tensor_grid

    with ema_weights(ema, accelerator.unwrap_model(model)) as trainer:
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
    return {"validation/reconstruction_mse": mse}


def log_start(loop, args: argparse.Namespace, partition, profile: dict | None) -> None:
    """The trackers (with the loss profile figure on a fresh run) and the start-up line."""
    from diti_hf.training.reporting import log_figure, tracker_config

    accelerator = loop.accelerator
    if accelerator.is_main_process:
        config = tracker_config(args)
        if args.partition == "auto":  # the fitted stages, not the flags' None
            config.update(stages=str(partition.stages), dims_per_stage=str(partition.dims_per_stage))
        accelerator.init_trackers(args.tracker_project_name or "train_diti", config=config)
        if profile is not None and loop.start_step == 0:
            from diti_hf.evaluation.loss_profile import loss_profile_figure

            log_figure(accelerator, "ddpm/loss_profile", loss_profile_figure(profile, partition), 0)
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
    from diti_hf.training.logging_utils import startup_step
    from diti_hf.training.run import TrainingLoop, make_accelerator, setup_logging

    accelerator = make_accelerator(args)
    setup_logging(accelerator, logger)
    set_seed(args.seed)  # same initial weights on every process (DDP would broadcast rank 0's anyway)

    # ---- the frozen DDPM and its schedule, and the flags checked against them before any data is read
    unet, scheduler_config = load_frozen_ddpm_from_args(args, accelerator.device)
    coefficients = DiffusionCoefficients.from_scheduler_config(scheduler_config)
    T = coefficients.num_train_timesteps
    preflight = diti_preflight(args, unet, T)
    if preflight.problems:
        raise ScriptArgumentError("; ".join(preflight.problems))
    resolution = preflight.resolution

    # ---- data: each process reads its own share, in a seeded order that a resumed run replays
    raw, transform, data = training_data_from_args(args, accelerator, resolution, unet.config.in_channels, logger)
    validation_images = None
    if accelerator.is_main_process:
        validation_images = validation_batch(raw, transform, args.num_validation_images, args.image_column)

    # ---- where the frozen DDPM's error lies (and, with --partition auto, the partition fitted to it)
    profile, fitted_partition = None, None
    if args.loss_profile_images:
        with startup_step(logger, f"measuring the DDPM loss profile on {args.loss_profile_images} images"):
            profile_images = validation_batch(raw, transform, args.loss_profile_images, args.image_column)
            profile, fitted_partition = profile_and_partition(
                args, accelerator, unet.to(accelerator.device), coefficients, profile_images, logger
            )

    # ---- trainable encoder + decoder; the optimisation (official: Adam 1e-4, β 0.9/0.999, ε 1e-8, no weight decay,
    # no warm-up, EMA 0.9999 from the first step, i.e. --no-ema_warmup; the default EMA warms up so that short runs
    # export trained weights)
    with startup_step(logger, "building the encoder and decoder and preparing the run"):
        model = build_diti_model(args, unet, scheduler_config, resolution, transform, fitted_partition)
        loop = TrainingLoop(accelerator, args, model, T, data.batches_per_epoch)
    unet.to(accelerator.device)  # frozen: device placement only, no DDP wrapper
    coefficients = coefficients.to(accelerator.device)
    sampling_scheduler = ddim_scheduler(scheduler_config)
    log_start(loop, args, loop.unwrapped_model.encoder.partition, profile)
    if accelerator.is_main_process:  # what `diti-hf export` needs to turn any checkpoint into a pipeline
        record_run(
            args.output_dir, loop.unwrapped_model.encoder, loop.unwrapped_model.decoder, sampling_scheduler,
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
        loop.ema.copy_to(loop.unwrapped_model.parameters())
        pipe = DiTiPipeline(
            unet=unet,
            encoder=loop.unwrapped_model.encoder,
            decoder=loop.unwrapped_model.decoder,
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

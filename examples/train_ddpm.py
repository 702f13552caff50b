#!/usr/bin/env python
"""Train the frozen base model of DiTi: a diffusers `UNet2DModel` DDPM (ε-prediction, linear betas 1e-4..0.02,
T = 1000), with 🤗 accelerate on 🤗 datasets — for users without a pretrained DDPM.

The result is a diffusers `DDPMPipeline` folder (`unet/`, `scheduler/`, EMA weights) that `train_diti.py` takes as
`--pretrained_unet`:

    accelerate launch examples/train_ddpm.py --dataset_name diti-shapes --resolution 32 --output_dir ./ddpm-shapes

Same machinery as train_diti.py: mixed precision, gradient accumulation, EMA, crash-safe resumable checkpoints,
tensorboard (loss, lr, throughput, per-t loss histogram, sample grids).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from diti_hf.sampling import MAX_TRAIN_TIMESTEPS
from diti_hf.training.args import (
    OneLineArgumentParser,
    add_data_arguments,
    add_training_arguments,
    check_data_arguments,
    check_training_arguments,
)
from diti_hf.training.model import UNET_PRESETS, DDPMTrainingModel, build_unet
from diti_hf.training.run import run_script

logger = logging.getLogger("train_ddpm")


def build_parser() -> OneLineArgumentParser:
    """The argument parser (every flag has a help text)."""
    parser = OneLineArgumentParser(
        prog="train_ddpm.py", description="Train a diffusers UNet2DModel DDPM (the frozen base model of DiTi)."
    )
    group = parser.add_argument_group("model")
    group.add_argument(
        "--unet_preset", type=str, default="small32", choices=sorted(UNET_PRESETS), help="UNet architecture."
    )
    group.add_argument(
        "--unet_config", type=str, default=None, help="A UNet2DModel config.json to use instead of the preset."
    )
    group.add_argument("--block_out_channels", type=int, nargs="+", default=None, help="Override: channels per level.")
    group.add_argument("--layers_per_block", type=int, default=None, help="Override: resnets per level.")
    group.add_argument(
        "--attention_levels",
        type=int,
        nargs="*",
        default=None,
        help="Override: levels (0 = full resolution) whose blocks have self-attention.",
    )
    group.add_argument("--dropout", type=float, default=None, help="Override: resnet dropout.")
    group.add_argument("--num_train_timesteps", type=int, default=1000, help="T of the DDPM.")
    group.add_argument("--beta_start", type=float, default=1e-4, help="First beta of the linear schedule.")
    group.add_argument("--beta_end", type=float, default=0.02, help="Last beta of the linear schedule.")
    group.add_argument(
        "--prediction_type",
        type=str,
        default="epsilon",
        choices=("epsilon", "v_prediction"),
        help="What the UNet predicts: ε, or v = √ᾱ ε − √(1−ᾱ) x_0, whose ε = √ᾱ v + √(1−ᾱ) x_t stays exact at high t.",
    )
    group.add_argument(
        "--validation_inference_steps", type=int, default=50, help="Steps of the validation samples (DDIM, η = 1)."
    )
    add_data_arguments(parser, default_resolution=None)
    # Each checkpoint holds the UNet, its EMA and Adam's moments: keep the last few, not one per --checkpointing_steps.
    add_training_arguments(parser, max_grad_norm=1.0, checkpoints_total_limit=3)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags; an impossible flag exits with code 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.histogram_steps = args.histogram_steps or 10 * args.logging_steps
    problems = check_data_arguments(args) + check_training_arguments(args)
    if args.unet_config is not None and not Path(args.unet_config).is_file():
        problems.append(f"--unet_config: {args.unet_config!r} is not a file")
    if not 2 <= args.num_train_timesteps <= MAX_TRAIN_TIMESTEPS:
        problems.append(
            f"--num_train_timesteps: must lie in [2, {MAX_TRAIN_TIMESTEPS}], got {args.num_train_timesteps}"
        )
    if not 0 < args.beta_start < args.beta_end < 1:
        problems.append(f"--beta_start/--beta_end: need 0 < start < end < 1, got {args.beta_start}, {args.beta_end}")
    if args.validation_inference_steps < 1:
        problems.append(f"--validation_inference_steps: must be >= 1, got {args.validation_inference_steps}")
    if problems:
        parser.error("; ".join(problems))
    return args


@torch.no_grad()
def log_validation(accelerator, model, ema, noise_scheduler, args, step: int, num_images: int) -> None:
    """A grid of samples of the EMA weights (DDIM with η = 1, which keeps colour saturation; see the CPU notes)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    from diti_hf.training.ema import ema_weights
    from diti_hf.training.reporting import log_image
    from diti_hf.visualization import tensor_grid

    with ema_weights(ema, accelerator.unwrap_model(model).unet) as unet:
        pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(noise_scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(args.seed)  # the same noise every time: comparable grids
        images = pipe(
            batch_size=num_images,
            generator=generator,
            eta=1.0,
            num_inference_steps=args.validation_inference_steps,
            output_type="np",
        ).images
        grid = tensor_grid([torch.from_numpy(images).permute(0, 3, 1, 2)])
        log_image(accelerator, "validation/samples", grid, step)


def main(args: argparse.Namespace) -> dict:
    """Trains and returns the run summary (also written to `output_dir/training_summary.json`)."""
    from accelerate.utils import set_seed
    from diffusers import DDPMPipeline, DDPMScheduler

    from diti_hf.data import TRANSFORM_PRESETS
    from diti_hf.training.args import training_data_from_args
    from diti_hf.training.logging_utils import startup_step
    from diti_hf.training.reporting import tracker_config
    from diti_hf.training.run import TrainingLoop, make_accelerator, setup_logging

    accelerator = make_accelerator(args)
    setup_logging(accelerator, logger)
    set_seed(args.seed)

    resolution = args.resolution
    if resolution is None:
        resolution = TRANSFORM_PRESETS.get(args.preprocessing or "", {}).get("resolution", 32)
    num_channels = 3
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_start=args.beta_start,
        beta_end=args.beta_end,
        beta_schedule="linear",
        prediction_type=args.prediction_type,
        clip_sample=True,
    )
    unet = build_unet(args, resolution, num_channels, accelerator.device)
    _, _, data = training_data_from_args(args, accelerator, resolution, num_channels, logger)
    with startup_step(logger, "preparing the run"):
        model = DDPMTrainingModel(unet).train()
        loop = TrainingLoop(accelerator, args, model, args.num_train_timesteps, data.batches_per_epoch)
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name or "train_ddpm", config=tracker_config(args))
    keep = f"the last {args.checkpoints_total_limit}" if args.checkpoints_total_limit else "all"
    logger.info(
        "training %d steps of %d images, UNet %.2fM parameters, from step %d into %s; lr %g (%s, %d warm-up steps); "
        "%s; a checkpoint every %d steps, keeping %s",
        loop.max_train_steps, loop.global_batch, sum(p.numel() for p in loop.unwrapped_model.parameters()) / 1e6,
        loop.start_step, args.output_dir, args.learning_rate, args.lr_scheduler, args.lr_warmup_steps,
        loop.ema_summary(logger), args.checkpointing_steps, keep,
    )  # fmt: skip

    def validate(step: int) -> None:
        log_validation(accelerator, loop.model, loop.ema, noise_scheduler, args, step, args.num_validation_images)

    def step_loss(model, images: torch.Tensor, generator: torch.Generator):
        return model(images, noise_scheduler, generator)

    loop.train(data, step_loss, validate, desc="train_ddpm")

    def save_final() -> dict:
        """Final samples, then the DDPMPipeline folder (unet/ + scheduler/) with the EMA weights."""
        validate(loop.run.global_step)
        loop.ema.copy_to(loop.unwrapped_model.parameters())
        pipeline = DDPMPipeline(unet=loop.unwrapped_model.unet, scheduler=noise_scheduler)
        pipeline.to("cpu").save_pretrained(args.output_dir)
        return {}

    return loop.finish(save_final)


if __name__ == "__main__":
    run_script(main, parse_args)

"""The command-line flags of the training scripts (`examples/train_ddpm.py`, `examples/train_diti.py`): data,
optimisation, checkpointing, logging and Hub flags, their checks before anything is loaded, the data they select,
and the one-line argument errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..data.images import BadImageError
from ..data.loading import (
    DEFAULT_NUM_SHAPES,
    DeviceImages,
    ImageDataset,
    StreamingImageDataset,
    TrainingImages,
    load_image_dataset,
)
from ..data.shapes import SHAPES_DATASETS
from ..data.transforms import TRANSFORM_PRESETS, CropBox, ImageTransform
from .checkpointing import list_checkpoints
from .logging_utils import startup_step

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


class ScriptArgumentError(ValueError):
    """A flag or a combination of flags is impossible; reported as one line with exit code 2."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Ends every flag's help with its default, except `None`/`False` defaults (which mean "not set")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if unset or not action.option_strings or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


class OneLineArgumentParser(argparse.ArgumentParser):
    r"""
    An `ArgumentParser` whose errors are one line (`prog: error: ...`) on stderr, with exit code 2, and whose `--help`
    shows each flag's default.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)


# One flat list of flags, in the order `--help` prints them: splitting it would only scatter that order.
def add_training_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """Adds the optimisation, checkpointing, logging and Hub flags; `defaults` override flag defaults by name."""
    group = parser.add_argument_group("optimisation")
    group.add_argument("--output_dir", type=str, required=True, help="Folder of checkpoints, logs and the result.")
    group.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data order, t and noise.")
    group.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process (device).")
    group.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="Batches accumulated per optimizer step; global batch = train_batch_size × processes × this.",
    )
    group.add_argument("--max_train_steps", type=int, default=None, help="Total optimizer steps (overrides the rest).")
    group.add_argument(
        "--max_train_images",
        type=int,
        default=None,
        help="Total training images (e.g. 38_000_000 for the paper's CelebA-64); steps = ceil(images / global batch).",
    )
    group.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help=(
            "Wall-time budget of this launch, counted from its start: at the first optimizer step after it, save a "
            "checkpoint and the final model as if the step count were reached (resumable with a larger budget)."
        ),
    )
    group.add_argument(
        "--num_train_epochs", type=int, default=1, help="Epochs, if neither --max_train_steps nor --max_train_images."
    )
    group.add_argument("--learning_rate", type=float, default=1e-4, help="Peak learning rate (Adam).")
    group.add_argument("--lr_scheduler", type=str, default="constant", choices=LR_SCHEDULERS, help="LR schedule.")
    group.add_argument("--lr_warmup_steps", type=int, default=0, help="Linear warm-up steps of the schedule.")
    group.add_argument("--adam_beta1", type=float, default=0.9, help="Adam β1.")
    group.add_argument("--adam_beta2", type=float, default=0.999, help="Adam β2.")
    group.add_argument("--adam_epsilon", type=float, default=1e-8, help="Adam ε.")
    group.add_argument("--adam_weight_decay", type=float, default=0.0, help="Decoupled weight decay (0 = Adam).")
    group.add_argument(
        "--max_grad_norm",
        type=float,
        default=None,
        help="Clip the gradient norm to this value (default: no clipping).",
    )
    group.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=("no", "fp16", "bf16"),
        help="Autocast precision (default: the accelerate config's). Weights and EMA stay float32.",
    )
    group.add_argument(
        "--ema_decay",
        type=float,
        default=0.9999,
        help="EMA decay of the trained weights (the exported ones); with --ema_warmup, the decay's upper bound.",
    )
    group.add_argument(
        "--ema_warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "Ramp the EMA decay up from 0 as diffusers' EMAModel does, 1-(1+step)^(-2/3) capped at --ema_decay, so that "
            "a run of any length exports trained weights. --no-ema_warmup applies --ema_decay from the first step, as "
            "the official code (0.9999 then needs ~10k steps before the EMA forgets the initial weights)."
        ),
    )
    group.add_argument("--num_threads", type=int, default=None, help="torch CPU threads per process.")
    group.add_argument(
        "--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs (faster, slightly less exact)."
    )

    group = parser.add_argument_group("checkpoints")
    group.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable state every N steps.")
    group.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=None,
        help="Keep at most this many checkpoints, deleting the oldest (unset: keep every one).",
    )
    group.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="`latest` (newest complete checkpoint in --output_dir; a fresh start if none) or a checkpoint folder.",
    )
    group.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help=(
            "Resume a checkpoint written by an earlier diti_hf, whose pickled state files can run code when loaded "
            "(only for checkpoints you wrote yourself); checkpoints saved from then on hold no pickles."
        ),
    )
    group.add_argument(
        "--stop_after_steps",
        type=int,
        default=None,
        help=(
            "Stop this launch after N more optimizer steps as if interrupted (after a checkpoint, no final model); "
            "for time-limited jobs that resume with --resume_from_checkpoint latest."
        ),
    )

    group = parser.add_argument_group("logging")
    group.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, relative to --output_dir.")
    group.add_argument(
        "--report_to",
        type=str,
        default="tensorboard",
        help="`tensorboard`, `wandb`, `all` or `none`.",
    )
    group.add_argument("--tracker_project_name", type=str, default=None, help="Tracker run name.")
    group.add_argument("--logging_steps", type=int, default=10, help="Log loss, lr and throughput every N steps.")
    group.add_argument(
        "--histogram_steps",
        type=int,
        default=None,
        help="Log the per-t loss histogram every N steps (default: 10×logging).",
    )
    group.add_argument(
        "--validation_steps",
        type=int,
        default=500,
        help="Log validation image grids every N steps (0: only at the end).",
    )
    group.add_argument("--num_validation_images", type=int, default=8, help="Images in the validation grids.")

    group = parser.add_argument_group("hub")
    group.add_argument("--push_to_hub", action="store_true", help="Upload the final folder to the Hub at the end.")
    group.add_argument("--hub_model_id", type=str, default=None, help="Hub repo id (default: the output folder name).")
    group.add_argument("--hub_token", type=str, default=None, help="Hub token (default: the logged-in one).")
    group.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repo as private.")
    group.add_argument(
        "--max_nonfinite_steps",
        type=int,
        default=10,
        help="Skip a batch whose loss is NaN/inf; abort after this many such batches in a row.",
    )
    parser.set_defaults(**defaults)


def check_training_arguments(args: argparse.Namespace) -> list[str]:
    """Problems with the shared flags, as `--flag: message` strings."""
    problems = []
    positive = ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "logging_steps")
    for name in positive:
        if getattr(args, name) < 1:
            problems.append(f"--{name}: must be >= 1, got {getattr(args, name)}")
    for name in (
        "max_train_steps",
        "max_train_images",
        "num_train_epochs",
        "checkpoints_total_limit",
        "stop_after_steps",
        "histogram_steps",
        "num_threads",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            problems.append(f"--{name}: must be >= 1, got {value}")
    if args.max_train_minutes is not None and not args.max_train_minutes > 0:
        problems.append(f"--max_train_minutes: must be > 0, got {args.max_train_minutes}")
    if args.validation_steps < 0:
        problems.append(f"--validation_steps: must be >= 0, got {args.validation_steps}")
    if args.num_validation_images < 2:
        problems.append(f"--num_validation_images: must be >= 2 (swaps need pairs), got {args.num_validation_images}")
    if not 0.0 <= args.ema_decay < 1.0:
        problems.append(f"--ema_decay: must lie in [0, 1), got {args.ema_decay}")
    if args.learning_rate <= 0:
        problems.append(f"--learning_rate: must be > 0, got {args.learning_rate}")
    if args.lr_warmup_steps < 0:
        problems.append(f"--lr_warmup_steps: must be >= 0, got {args.lr_warmup_steps}")
    if args.max_grad_norm is not None and args.max_grad_norm <= 0:
        problems.append(f"--max_grad_norm: must be > 0, got {args.max_grad_norm}")
    if args.report_to not in ("tensorboard", "wandb", "all", "none"):
        problems.append(f"--report_to: expected tensorboard, wandb, all or none, got {args.report_to!r}")
    if args.resume_from_checkpoint not in (None, "latest") and not Path(args.resume_from_checkpoint).is_dir():
        problems.append(f"--resume_from_checkpoint: {args.resume_from_checkpoint!r} is neither `latest` nor a folder")
    problems += _output_dir_problems(args)
    problems += _hub_problems(args)
    return problems


def _output_dir_problems(args: argparse.Namespace) -> list[str]:
    # Found now rather than after training: a file in the way, no write permission, or an earlier run's results that a
    # fresh start would mix its checkpoints with (and whose model it would overwrite at the end).
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        return [f"--output_dir: {str(out)!r} exists and is not a folder"]
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return [f"--output_dir: {str(out)!r} is not writable (no write permission on {str(existing)!r})"]
    if args.resume_from_checkpoint is None and out.is_dir():
        held = [p.name for p in list_checkpoints(out)]
        if (out / "model_index.json").is_file():
            held.append("model_index.json")
        if held:
            shown = ", ".join(held[:3] + (["..."] if len(held) > 3 else []))
            return [
                f"--output_dir: {str(out)!r} already holds an earlier run ({shown}); pass --resume_from_checkpoint "
                "latest to continue it, or choose an empty folder"
            ]
    return []


def _hub_problems(args: argparse.Namespace) -> list[str]:
    # The upload happens after training: a missing login would otherwise surface only then.
    if not args.push_to_hub:
        return []
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if constants.HF_HUB_OFFLINE:
        return ["--push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it or drop --push_to_hub"]
    if args.hub_model_id is not None:
        try:
            validate_repo_id(args.hub_model_id)
        except HFValidationError as error:
            return [f"--hub_model_id: {args.hub_model_id!r} is not a Hub repo id ({error})"]
    if not (args.hub_token or get_token()):
        return ["--push_to_hub: no Hub token; log in with `hf auth login` (or set HF_TOKEN) or pass --hub_token"]
    return []


def total_train_steps(args: argparse.Namespace, global_batch: int, batches_per_epoch: int | None) -> int:
    r"""
    Optimizer steps of the run: `--max_train_steps`, else `ceil(--max_train_images / global_batch)`, else
    `--num_train_epochs` × steps per epoch (a map-style dataset is needed for the last).
    """
    if args.max_train_steps is not None:
        return args.max_train_steps
    if args.max_train_images is not None:
        return math.ceil(args.max_train_images / global_batch)
    if batches_per_epoch is None:
        raise ScriptArgumentError(
            "--max_train_steps/--max_train_images: a streamed dataset has no known length; give one of them."
        )
    return max(1, args.num_train_epochs * batches_per_epoch // args.gradient_accumulation_steps)


# ------------------------------------------------------------------------------------------------------- data flags
# One flat list of flags, in the order `--help` prints them: splitting it would only scatter that order.
def add_data_arguments(parser: argparse.ArgumentParser, default_resolution: int | None = None) -> None:
    """Adds the data flags shared by the training scripts (a group "data")."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help=(
            "A 🤗 Hub dataset id, a folder saved with `Dataset.save_to_disk`, or `diti-shapes` (the built-in "
            "procedural shapes, generated in memory). Exclusive with --train_data_dir."
        ),
    )
    group.add_argument("--dataset_config", type=str, default=None, help="Configuration name of the Hub dataset.")
    group.add_argument("--dataset_revision", type=str, default=None, help="Hub revision (branch, tag, commit).")
    group.add_argument("--split", type=str, default="train", help="Dataset split to train on.")
    group.add_argument(
        "--train_data_dir",
        type=str,
        default=None,
        help="A local folder of images (any nesting; read with the `imagefolder` builder).",
    )
    group.add_argument(
        "--streaming",
        action="store_true",
        help="Stream the dataset instead of downloading it first (for datasets too big for the disk).",
    )
    group.add_argument("--shuffle_buffer_size", type=int, default=1000, help="Shuffle buffer of --streaming.")
    group.add_argument("--cache_dir", type=str, default=None, help="Cache folder of 🤗 datasets and models.")
    group.add_argument(
        "--image_column", type=str, default=None, help="Column holding the images (default: `image`, or the only one)."
    )
    group.add_argument(
        "--num_train_images",
        type=int,
        default=None,
        help=f"Use only the first N images; with `diti-shapes`, the number generated (default {DEFAULT_NUM_SHAPES}).",
    )
    group.add_argument(
        "--resolution",
        type=int,
        default=default_resolution,
        help="Training image side (default: the preprocessing preset's, else the UNet's sample_size).",
    )
    group.add_argument(
        "--preprocessing",
        type=str,
        default=None,
        choices=sorted(TRANSFORM_PRESETS),
        help="A named preprocessing recipe; `celeba64`: crop top=57, left=25, 128×128 of aligned CelebA, resize 64.",
    )
    group.add_argument(
        "--crop_box",
        type=int,
        nargs=4,
        default=None,
        metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
        help="A fixed crop applied before resizing (overrides the preset's).",
    )
    group.add_argument(
        "--random_crop",
        action="store_true",
        help="Crop the resized image at a random position instead of the centre (non-square images only).",
    )
    group.add_argument("--random_flip", action="store_true", help="Flip images horizontally with probability 1/2.")
    group.add_argument(
        "--interpolation",
        type=str,
        default="bilinear",
        choices=("nearest", "bilinear", "bicubic", "lanczos", "box"),
        help="Resampling filter of the resize.",
    )
    group.add_argument(
        "--skip_bad_images",
        action="store_true",
        help="Skip corrupt or unreadable images (each is reported with its index) instead of stopping with an error.",
    )
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="Data-loading worker processes.")
    group.add_argument(
        "--dataset_on_device",
        action="store_true",
        help=(
            "Hold the whole (map-style, deterministically transformed) dataset on the training device as uint8 and "
            "batch it there: no workers, no per-step copy; the same batches as the loader."
        ),
    )


def check_data_arguments(args: argparse.Namespace) -> list[str]:
    """Problems with the data flags, as `--flag: message` strings (empty if none)."""
    problems = []
    if (args.dataset_name is None) == (args.train_data_dir is None):
        problems.append("--dataset_name/--train_data_dir: give exactly one of them")
    if args.resolution is not None and args.resolution < 8:
        problems.append(f"--resolution: must be >= 8, got {args.resolution}")
    if args.preprocessing is not None and args.resolution is not None:
        preset = TRANSFORM_PRESETS[args.preprocessing]["resolution"]
        if preset != args.resolution:
            problems.append(
                f"--resolution: {args.resolution} contradicts --preprocessing {args.preprocessing} (resolution {preset})"
            )
    if args.crop_box is not None:
        try:
            CropBox(*args.crop_box)
        except ValueError as error:
            problems.append(f"--crop_box: {error}")
    if args.num_train_images is not None and args.num_train_images < 1:
        problems.append(f"--num_train_images: must be >= 1, got {args.num_train_images}")
    if args.dataloader_num_workers < 0:
        problems.append(f"--dataloader_num_workers: must be >= 0, got {args.dataloader_num_workers}")
    if args.dataset_on_device:
        clashes = [flag for flag, on in (("--streaming", args.streaming), ("--random_flip", args.random_flip),
                                         ("--random_crop", args.random_crop)) if on]  # fmt: skip
        if clashes:
            problems.append(f"--dataset_on_device: holds each image once, transformed once; drop {', '.join(clashes)}")
    return problems


def transform_from_args(args: argparse.Namespace, resolution: int, num_channels: int = 3) -> ImageTransform:
    """The [`ImageTransform`] described by the data flags, at `resolution`."""
    fields: dict[str, Any] = dict(TRANSFORM_PRESETS[args.preprocessing]) if args.preprocessing else {}
    if args.crop_box is not None:
        fields["crop_box"] = CropBox(*args.crop_box)
    fields.update(
        resolution=resolution,
        crop="random" if args.random_crop else "center",
        random_flip=args.random_flip,
        num_channels=num_channels,
        interpolation=args.interpolation,
    )
    return ImageTransform(**fields)


def dataset_from_args(args: argparse.Namespace, resolution: int):
    """The raw dataset described by the data flags (see [`load_image_dataset`])."""
    return load_image_dataset(
        dataset_name=args.dataset_name,
        dataset_config=args.dataset_config,
        split=args.split,
        train_data_dir=args.train_data_dir,
        streaming=args.streaming,
        cache_dir=args.cache_dir,
        num_images=args.num_train_images,
        seed=args.seed,
        resolution=resolution,
        revision=args.dataset_revision,
    )


def training_images_from_args(
    args: argparse.Namespace,
    raw_dataset,
    transform: ImageTransform,
    batch_size: int,
    num_processes: int = 1,
    process_index: int = 0,
    pin_memory: bool = False,
    device: torch.device | str = "cpu",
) -> TrainingImages:
    """The per-process [`TrainingImages`] (or [`DeviceImages`] with `--dataset_on_device`) for the data flags."""
    import datasets

    common = {
        "transform": transform,
        "image_column": args.image_column,
        "seed": args.seed,
        "skip_bad_images": args.skip_bad_images,
    }
    if isinstance(raw_dataset, datasets.IterableDataset):
        dataset = StreamingImageDataset(
            raw_dataset,
            shuffle_buffer_size=args.shuffle_buffer_size,
            process_index=process_index,
            num_processes=num_processes,
            **common,
        )
    else:
        dataset = ImageDataset(raw_dataset, **common)
    if getattr(args, "dataset_on_device", False):
        return DeviceImages(dataset, batch_size, num_processes, process_index, args.seed, device=device)
    return TrainingImages(
        dataset,
        batch_size,
        num_processes=num_processes,
        process_index=process_index,
        seed=args.seed,
        num_workers=args.dataloader_num_workers,
        pin_memory=pin_memory,
    )


def describe_dataset(args: argparse.Namespace, resolution: int) -> str:
    """What loading the data flags' dataset does, for the start-up progress line."""
    if args.dataset_name in SHAPES_DATASETS:
        count = args.num_train_images or DEFAULT_NUM_SHAPES
        return f"generating the {args.dataset_name} dataset ({count:,} images, {resolution}×{resolution})"
    if args.train_data_dir is not None:
        return f"indexing the images of --train_data_dir {args.train_data_dir}"
    return f"loading the dataset {args.dataset_name}{' (streaming)' if args.streaming else ''}"


def training_data_from_args(
    args: argparse.Namespace, accelerator, resolution: int, num_channels: int, logger: logging.Logger | None = None
):
    r"""
    The dataset, its transform and this process's share of the batches, as the data flags select them. With a
    `logger`, loading the dataset is reported as a start-up step.

    Returns:
        `(raw, transform, data)`: the 🤗 dataset, the [`ImageTransform`] and the [`TrainingImages`].

    Raises:
        [`ScriptArgumentError`] for a dataset that cannot be loaded as asked; [`~diti_hf.data.BadImageError`]
        (a bad image, named) propagates as it is.
    """

    step = startup_step(logger, describe_dataset(args, resolution)) if logger else contextlib.nullcontext()
    try:
        with step:
            with accelerator.main_process_first():
                raw = dataset_from_args(args, resolution)
            transform = transform_from_args(args, resolution, num_channels)
            data = training_images_from_args(
                args,
                raw,
                transform,
                args.train_batch_size,
                accelerator.num_processes,
                accelerator.process_index,
                pin_memory=accelerator.device.type == "cuda",
                device=accelerator.device,
            )
    except BadImageError:
        raise
    except (ValueError, FileNotFoundError) as error:
        raise ScriptArgumentError(f"data: {error}") from error
    return raw, transform, data

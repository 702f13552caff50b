"""Pieces shared by `examples/train_ddpm.py` and `examples/train_diti.py`: flags, the accelerator, trackers, the
end-of-run summary and the Hub upload. The training loops themselves live in the scripts."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpointing import CHECKPOINT_PREFIX, OLD_PREFIX, TMP_PREFIX

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


class ScriptArgumentError(ValueError):
    """A flag or a combination of flags is impossible; reported as one line with exit code 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (`prog: error: ...`) on stderr, with exit code 2."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)


def run_script(main: Callable[[argparse.Namespace], Any], parse_args: Callable, argv: Sequence[str] | None = None):
    """
    `main(parse_args(argv))`, turning argument and data errors ([`ScriptArgumentError`], `BadImageError`) into one
    line on stderr and exit code 2. Other exceptions propagate with their traceback (they are bugs).
    """
    from ..data.loading import BadImageError

    args = parse_args(argv)
    try:
        return main(args)
    except (ScriptArgumentError, BadImageError) as error:
        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "train"
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)


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
        "--max_grad_norm", type=float, default=None, help="Clip the gradient norm to this value (default: no clipping)."
    )
    group.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=("no", "fp16", "bf16"),
        help="Autocast precision (default: the accelerate config's). Weights and EMA stay float32.",
    )
    group.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay of the trained weights.")
    group.add_argument(
        "--ema_warmup",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Ramp the EMA decay up (diffusers' 1-(1+step)^(-2/3)) instead of using it from the first step.",
    )
    group.add_argument("--num_threads", type=int, default=None, help="torch CPU threads per process.")
    group.add_argument(
        "--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs (faster, slightly less exact)."
    )

    group = parser.add_argument_group("checkpoints")
    group.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable state every N steps.")
    group.add_argument(
        "--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints (oldest go)."
    )
    group.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="`latest` (newest complete checkpoint in --output_dir; a fresh start if none) or a checkpoint folder.",
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
        "--histogram_steps", type=int, default=None, help="Log the per-t loss histogram every N steps (default: 10×logging)."
    )
    group.add_argument(
        "--validation_steps", type=int, default=500, help="Log validation image grids every N steps (0: only at the end)."
    )
    group.add_argument("--num_validation_images", type=int, default=8, help="Images in the validation grids.")

    group = parser.add_argument_group("hub")
    group.add_argument("--push_to_hub", action="store_true", help="Upload the final folder to the Hub at the end.")
    group.add_argument("--hub_model_id", type=str, default=None, help="Hub repo id (default: the output folder name).")
    group.add_argument("--hub_token", type=str, default=None, help="Hub token (default: the logged-in one).")
    group.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repo as private.")
    parser.set_defaults(**defaults)


def check_training_arguments(args: argparse.Namespace) -> list[str]:
    """Problems with the shared flags, as `--flag: message` strings."""
    problems = []
    positive = ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "logging_steps")
    for name in positive:
        if getattr(args, name) < 1:
            problems.append(f"--{name}: must be >= 1, got {getattr(args, name)}")
    for name in ("max_train_steps", "max_train_images", "num_train_epochs", "checkpoints_total_limit",
                 "stop_after_steps", "histogram_steps", "num_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            problems.append(f"--{name}: must be >= 1, got {value}")
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
    return problems


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


def make_accelerator(args: argparse.Namespace):
    r"""
    The run's `Accelerator`: mixed precision, gradient accumulation, trackers, project folders.

    When a launcher started several processes on a machine without any accelerator device, processes are bound
    to the CPU (gloo): otherwise accelerate would silently run independent single-process copies.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator_available = hasattr(torch, "accelerator") and torch.accelerator.is_available()
    cpu = world_size > 1 and not accelerator_available
    report_to = None if args.report_to == "none" else args.report_to
    project = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=project,
        cpu=cpu,
    )
    if world_size > accelerator.num_processes:
        raise RuntimeError(
            f"{world_size} processes were launched but accelerate set up {accelerator.num_processes}; check the "
            "accelerate config (distributed_type, use_cpu)."
        )
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    return accelerator


def tracker_config(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as tracker hyper-parameters (scalars and strings only, as tensorboard requires)."""
    config = {}
    for key, value in vars(args).items():
        if key in ("hub_token",):
            continue
        config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


def tensorboard_writer(accelerator):
    """The tensorboard `SummaryWriter` of the run, or `None` when not logging to tensorboard (main process only)."""
    if not accelerator.is_main_process or not accelerator.trackers:
        return None
    try:
        return accelerator.get_tracker("tensorboard", unwrap=True)
    except ValueError:  # logging to other trackers only
        return None


def log_figure(accelerator, tag: str, figure, step: int) -> None:
    """Logs a matplotlib figure to tensorboard (if used)."""
    writer = tensorboard_writer(accelerator)
    if writer is not None and hasattr(writer, "add_figure"):
        writer.add_figure(tag, figure, global_step=step, close=False)


def log_image(accelerator, tag: str, image: torch.Tensor, step: int) -> None:
    """Logs a `(C, H, W)` image in [0, 1] to tensorboard (if used)."""
    writer = tensorboard_writer(accelerator)
    if writer is not None and hasattr(writer, "add_image"):
        writer.add_image(tag, image, global_step=step, dataformats="CHW")


def write_summary(output_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Writes `output_dir/training_summary.json`."""
    path = Path(output_dir) / "training_summary.json"
    path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    return path


def push_folder_to_hub(
    folder: str | os.PathLike, repo_id: str | None, token: str | None = None, private: bool = False
) -> str:
    """Uploads `folder` (without checkpoints) to the Hub repo `repo_id` (created if needed); returns the repo id."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = repo_id or Path(folder).resolve().name
    repo_id = create_repo(repo_id, exist_ok=True, token=token, private=private).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message="End of training",
        ignore_patterns=[f"{CHECKPOINT_PREFIX}*", f"{TMP_PREFIX}*", f"{OLD_PREFIX}*", "*.tmp"],
        token=token,
    )
    return repo_id

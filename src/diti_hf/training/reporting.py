"""What a training launch reports: the tracker logs (scalars, the per-t loss histogram, figures, images), the
summary file and the Hub upload."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..safe_io import LOCK_NAME
from .checkpointing import CHECKPOINT_PREFIX, DAMAGED_PREFIX, OLD_PREFIX, TMP_PREFIX
from .run_state import RunState


def tracker_config(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as tracker hyper-parameters (scalars and strings only, as tensorboard requires)."""
    config = {}
    for key, value in vars(args).items():
        if key in ("hub_token", "command_line"):
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
        ignore_patterns=[
            f"{CHECKPOINT_PREFIX}*",
            f"{TMP_PREFIX}*",
            f"{OLD_PREFIX}*",
            f"{DAMAGED_PREFIX}*",
            "*.tmp",
            LOCK_NAME,
        ],
        token=token,
    )
    return repo_id


def log_periodic(
    accelerator, args: argparse.Namespace, run: RunState, meter, lr_scheduler, extra: dict[str, float] | None = None
) -> dict[str, float]:
    r"""
    The periodic logs after optimizer step `run.global_step`: every `--logging_steps` the loss (mean over processes
    and the steps since the last log), lr, throughput and `extra`; every `--histogram_steps` the per-t loss
    histogram (summed over processes) as a figure. Returns the scalars logged (empty if none).
    """
    from .logging_utils import TimestepLossHistogram

    step, logged = run.global_step, {}
    if step % args.logging_steps == 0:
        mean_loss = accelerator.reduce(torch.tensor(run.pop_mean_loss(), device=accelerator.device), "mean")
        logged = {
            "train/loss": float(mean_loss),
            "train/lr": lr_scheduler.get_last_lr()[0],
            "train/images_per_s": meter.window_images_per_second(),
            "train/epoch": run.position.epoch,
            **(extra or {}),
        }
        accelerator.log(logged, step=step)
    if step % args.histogram_steps == 0:
        total = accelerator.reduce(run.histogram.state().to(accelerator.device), "sum").cpu()
        run.histogram.reset()
        if accelerator.is_main_process:
            merged = TimestepLossHistogram(run.histogram.num_train_timesteps, run.histogram.num_buckets)
            merged.load_state(total)
            log_figure(accelerator, "train/loss_per_timestep", merged.figure(), step)
    return logged

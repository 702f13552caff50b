"""Pieces shared by `examples/train_ddpm.py` and `examples/train_diti.py`: flags, the accelerator, trackers, the
end-of-run summary and the Hub upload. The training loops themselves live in the scripts."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..cpu_memory import reuse_freed_memory
from ..safe_io import LOCK_NAME, FolderInUseError, FolderLock
from .checkpointing import CHECKPOINT_PREFIX, DAMAGED_PREFIX, OLD_PREFIX, TMP_PREFIX

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


class ScriptArgumentError(ValueError):
    """A flag or a combination of flags is impossible; reported as one line with exit code 2."""


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had a NaN/inf loss; reported as one line with exit code 3."""


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) stopped a launch; reported as one line (the step, the last checkpoint) with exit code 130."""


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


def run_script(main: Callable[[argparse.Namespace], Any], parse_args: Callable, argv: Sequence[str] | None = None):
    """
    `main(parse_args(argv))`, turning argument and data errors ([`ScriptArgumentError`], `BadImageError`) into one
    line on stderr and exit code 2, and Ctrl-C into one line and exit code 130. Other exceptions propagate with their
    traceback (they are bugs).
    """
    from ..data.loading import BadImageError

    args = parse_args(argv)
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "train"
    try:
        return main(args)
    except (ScriptArgumentError, BadImageError) as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(3)
    except TrainingInterrupted as error:
        print(f"{prog}: {error}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # outside the training loop (loading, the final save): nothing half-done is reused
        print(f"{prog}: interrupted; resume with --resume_from_checkpoint latest", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def stop_cleanly_on_interrupt(run: RunState, output_dir: str | os.PathLike, progress: Any = None) -> Iterator[None]:
    r"""
    Turns Ctrl-C inside the training loop into [`TrainingInterrupted`], whose one-line message names the step reached
    and the newest complete checkpoint (checkpoints are written atomically, so an interrupted save never replaces
    one). No checkpoint is written on the way out: the interrupt can land inside an optimizer step.

    Args:
        run ([`RunState`]): The run, for its step.
        output_dir (`str` or `os.PathLike`): Where the checkpoints are.
        progress (*optional*): A tqdm bar, closed first so that the message starts on its own line.
    """
    from .checkpointing import latest_checkpoint

    try:
        yield
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        last = latest_checkpoint(output_dir)
        saved = f"last checkpoint: {last.name}" if last is not None else "no checkpoint saved yet"
        raise TrainingInterrupted(
            f"interrupted at step {run.global_step} ({saved}); resume with --resume_from_checkpoint latest"
        ) from None


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
    from .checkpointing import list_checkpoints

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
    if accelerator.device.type == "cpu":
        reuse_freed_memory()  # no page faults for every new activation tensor (diti_hf.cpu_memory)
    return accelerator


def check_resumed_ema(ema, args: argparse.Namespace) -> None:
    r"""
    Raises [`ScriptArgumentError`] when the EMA restored from a checkpoint ramps its decay differently from what
    `--ema_warmup`/`--no-ema_warmup` asks for: the restored state would silently win and change the exported average.
    """
    restored = bool(ema.use_ema_warmup)
    if restored != bool(args.ema_warmup):
        kind, flag = ("a warm-up", "--ema_warmup") if restored else ("a constant-decay", "--no-ema_warmup")
        raise ScriptArgumentError(
            f"--ema_warmup: the checkpoint's EMA is {kind} EMA; resume it with {flag} (or start a new --output_dir)"
        )


def ema_summary(ema, args: argparse.Namespace, max_train_steps: int, logger: logging.Logger) -> str:
    r"""
    The EMA phrase of the start-up line (from the EMA itself, so a resumed run shows the checkpoint's decay), with a
    warning when a constant decay would leave the exported weights mostly the initial ones.
    """
    from .ema import describe_ema, initial_weight_share

    decay, warmup = float(ema.decay), bool(args.ema_warmup)
    share = initial_weight_share(max_train_steps, decay, warmup)
    if share > 0.5:
        logger.warning(
            "--ema_decay %g without warm-up over %d steps: the exported (EMA) weights will be %.0f%% the initial ones; "
            "drop --no-ema_warmup or lower --ema_decay",
            decay, max_train_steps, 100 * share,
        )  # fmt: skip
    return describe_ema(decay, warmup, max_train_steps)


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], args: argparse.Namespace, device: torch.device
) -> torch.optim.AdamW:
    """
    AdamW from the `--adam_*`/`--learning_rate` flags; on CPU and CUDA the fused (one kernel per parameter) update,
    which takes 11 instead of 37 ms per step on the CPU benchmark configuration (benchmarks/RESULTS.md).
    """
    return torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.adam_weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )


def setup_logging(accelerator, logger: logging.Logger) -> None:
    """INFO logs on the local main process; only errors from the other processes (and their libraries)."""
    import datasets
    import diffusers
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_local_main_process:
        for library in (datasets, transformers, diffusers):
            library.utils.logging.set_verbosity_error()
        logger.setLevel(logging.WARNING)


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


def process_seed(seed: int, process_index: int) -> int:
    """A seed for process `process_index`'s own random stream (t, noise), distinct per process, stable per seed."""
    import numpy as np

    return int(np.random.SeedSequence([seed, process_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class RunState:
    r"""
    The per-process state a checkpoint must hold beyond what `accelerator.save_state` saves: the optimizer step,
    the data position, the generator of t and noise, and the partial logging windows — so that a resumed run
    continues bit-for-bit where the interrupted one stopped.

    Args:
        seed (`int`): The run's seed.
        process_index (`int`): This process.
        num_train_timesteps (`int`): `T`, for the per-t loss histogram.
    """

    def __init__(self, seed: int, process_index: int, num_train_timesteps: int):
        from ..data.loading import DataPosition
        from .logging_utils import TimestepLossHistogram

        self.global_step = 0
        self.position = DataPosition()
        self.generator = torch.Generator().manual_seed(process_seed(seed, process_index))
        self.histogram = TimestepLossHistogram(num_train_timesteps)
        self.loss_sum, self.loss_count = 0.0, 0
        self.nonfinite_total, self.nonfinite_in_a_row = 0, 0

    def loss_is_finite(self, accelerator, loss: torch.Tensor, max_in_a_row: int) -> bool:
        """
        Whether every process's `loss` is finite (all processes agree, so they skip the same batches). A skipped
        batch is counted; `max_in_a_row` skips in a row raise [`NonFiniteLossError`].
        """
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0, device=loss.device)
        if accelerator.num_processes > 1:
            bad = accelerator.reduce(bad, reduction="sum")
        if float(bad) == 0:
            self.nonfinite_in_a_row = 0
            return True
        self.nonfinite_total += 1
        self.nonfinite_in_a_row += 1
        logging.getLogger(__name__).warning(
            "non-finite loss at step %d: batch skipped (%d in a row, %d in total)",
            self.global_step, self.nonfinite_in_a_row, self.nonfinite_total,
        )  # fmt: skip
        if self.nonfinite_in_a_row >= max_in_a_row:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} batches in a row had a NaN/inf loss (step {self.global_step}); "
                "lower --learning_rate, check the data, or resume from an earlier checkpoint."
            )
        return False

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss_sum += float(loss.detach())
        self.loss_count += 1

    def pop_mean_loss(self) -> float:
        """The mean loss since the last call (this process's)."""
        mean = self.loss_sum / max(1, self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "data_position": dataclasses.asdict(self.position),
            "generator": self.generator.get_state(),
            "histogram": self.histogram.state(),
            "loss_window": (self.loss_sum, self.loss_count),
            "nonfinite": (self.nonfinite_total, self.nonfinite_in_a_row),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from ..data.loading import DataPosition

        self.global_step = int(state["global_step"])
        self.position = DataPosition(**state["data_position"])
        self.generator.set_state(state["generator"])
        self.histogram.load_state(state["histogram"])
        self.loss_sum, self.loss_count = state["loss_window"]
        self.nonfinite_total, self.nonfinite_in_a_row = state.get("nonfinite", (0, 0))


def resume_run(accelerator, args: argparse.Namespace, run: RunState, batches_per_epoch: int | None) -> Path | None:
    r"""
    Locks `--output_dir` against a second run, restores the checkpoint named by `--resume_from_checkpoint` (if any)
    into the prepared objects and `run`, and removes leftovers of interrupted saves. `latest` skips damaged
    checkpoints (set aside as `.damaged-checkpoint-<step>`), saying so; an earlier-format checkpoint needs
    `--trust_checkpoint`. Returns the checkpoint used.
    """
    from ..data.loading import DataPosition
    from .checkpointing import (
        CheckpointError,
        load_checkpoint,
        remove_incomplete_checkpoints,
        resolve_checkpoint,
        set_aside_newer_checkpoints,
    )

    trust = bool(getattr(args, "trust_checkpoint", False))
    if accelerator.is_main_process:
        try:
            FolderLock(args.output_dir, "training run").acquire()
        except FolderInUseError as error:
            raise ScriptArgumentError(f"--output_dir: {error}") from error
    try:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir, trust, log=accelerator.print)
    except CheckpointError as error:
        raise ScriptArgumentError(f"--resume_from_checkpoint: {error}") from error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        remove_incomplete_checkpoints(args.output_dir)
        if checkpoint is not None and args.resume_from_checkpoint == "latest":
            set_aside_newer_checkpoints(args.output_dir, checkpoint)
    accelerator.wait_for_everyone()
    if checkpoint is None:
        if args.resume_from_checkpoint == "latest":
            accelerator.print(f"no complete checkpoint in {args.output_dir}: starting from scratch")
        return None
    try:
        marker, state = load_checkpoint(
            accelerator, checkpoint, trust, process_state_like=run.state_dict(), verify=False
        )
        if state is not None:
            run.load_state_dict(state)
    except CheckpointError as error:
        raise ScriptArgumentError(f"--resume_from_checkpoint: {error}") from error
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # a trusted earlier-format state
        raise ScriptArgumentError(
            f"--resume_from_checkpoint: the process state of {checkpoint} does not fit this run "
            f"({type(error).__name__}: {error})"
        ) from error
    if state is None:  # a different process count: resume the weights, restart the data at the equivalent position
        run.global_step = int(marker["step"])
        consumed = run.global_step * args.gradient_accumulation_steps
        if batches_per_epoch:
            run.position = DataPosition(consumed // batches_per_epoch, consumed % batches_per_epoch)
    accelerator.print(f"resumed from {checkpoint} at step {run.global_step}")
    return checkpoint


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


def finish_run(
    accelerator,
    args: argparse.Namespace,
    run: RunState,
    meter,
    parameters,
    max_train_steps: int,
    global_batch: int,
    last_logged: dict[str, float],
    saved_at: int | None,
    save_final: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    r"""
    Ends a launch on every process: a checkpoint if the launch stopped early (`--stop_after_steps`), peak memory,
    throughput, a fingerprint of each process's weights (they must agree), then on the main process `save_final()`
    (final validation and model folder; skipped when stopped early), the summary file and line, and the Hub upload.
    """
    from .checkpointing import save_checkpoint
    from .logging_utils import parameter_fingerprint, peak_memory_mb

    interrupted = run.global_step < max_train_steps
    if interrupted and saved_at != run.global_step:
        save_checkpoint(accelerator, args.output_dir, run.global_step, run.state_dict(), args.checkpoints_total_limit)
    memory, memory_kind = peak_memory_mb(accelerator.device)
    fingerprints = accelerator.gather(parameter_fingerprint(parameters).to(accelerator.device)[None])
    summary = {
        "global_step": run.global_step,
        "max_train_steps": max_train_steps,
        "interrupted": interrupted,
        "num_processes": accelerator.num_processes,
        "global_batch_size": global_batch,
        "images_this_launch": meter.images,
        "train_seconds_this_launch": round(meter.seconds, 3),
        "throughput_images_per_s": round(meter.images_per_second(), 3),
        "peak_memory_mb": round(memory, 1),
        "peak_memory_kind": memory_kind,
        "skipped_nonfinite_batches": run.nonfinite_total,
        "last_logged": last_logged,
        "rank_weight_fingerprints": fingerprints.cpu().tolist(),
    }
    if accelerator.is_main_process:
        if not interrupted:
            summary.update(save_final())
        accelerator.log(
            {"final/throughput_images_per_s": summary["throughput_images_per_s"], "final/peak_memory_mb": memory},
            step=run.global_step,
        )
        write_summary(args.output_dir, summary)
        print(
            f"{'stopped' if interrupted else 'finished'} at step {run.global_step}/{max_train_steps}: "
            f"{meter.images} images in {meter.seconds:.1f} s = {summary['throughput_images_per_s']:.1f} images/s "
            f"(global); peak memory {memory:.0f} MiB ({memory_kind}, main process)",
            flush=True,
        )
        if args.push_to_hub and not interrupted:
            repo = push_folder_to_hub(args.output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo)
            print(f"pushed to https://huggingface.co/{repo}", flush=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if accelerator.is_main_process:
        FolderLock(args.output_dir, "training run").release()
    return summary

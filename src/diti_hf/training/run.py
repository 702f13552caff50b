"""One training launch of the example scripts: the accelerator, the optimizer, resuming, the training loop both
scripts share ([`TrainingLoop`]), Ctrl-C, the end of the run and the exit codes. What differs between the scripts (the
model, its loss, validation, the saved folder) is passed in; the per-process state is in `run_state`, the logs, the
summary file and the Hub upload in `reporting`, the EMA in `ema`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from ..cpu_memory import reuse_freed_memory
from ..safe_io import FolderInUseError, FolderLock
from .args import ScriptArgumentError, total_train_steps
from .checkpointing import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    remove_incomplete_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    set_aside_newer_checkpoints,
)
from .ema import check_resumed_ema, ema_summary, make_ema
from .reporting import log_periodic, push_folder_to_hub, write_summary
from .run_state import NonFiniteLossError, RunState

# float32 copies of each trained weight a launch holds (the weight, its gradient, Adam's two moments, the EMA): the
# factor of the memory estimate made from a model's config before the model is built.
TRAINED_WEIGHT_COPIES = 5


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) stopped a launch; reported as one line (the step, the last checkpoint) with exit code 130."""


def run_script(main: Callable[[argparse.Namespace], Any], parse_args: Callable, argv: Sequence[str] | None = None):
    r"""
    `main(parse_args(argv))`, turning argument and data errors ([`ScriptArgumentError`], `BadImageError`) and running
    out of memory into one line on stderr and exit code 2, and Ctrl-C into one line and exit code 130. Other
    exceptions propagate with their traceback (they are bugs). However the launch ends, the lock it holds on
    `--output_dir` is released and its `.lock` file deleted.
    """
    from ..data.images import BadImageError

    started = time.monotonic()
    args = parse_args(argv)
    args.launch_started = started  # --max_train_minutes counts from here
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
    except (MemoryError, RuntimeError) as error:  # after NonFiniteLossError, a RuntimeError too
        if not _is_out_of_memory(error):
            raise
        print(
            f"{prog}: error: out of memory ({' '.join(str(error).split())[:300]}); lower --train_batch_size (raise "
            "--gradient_accumulation_steps to keep the batch), use --gradient_checkpointing or a smaller model",
            file=sys.stderr,
        )
        sys.exit(2)
    finally:
        release_output_lock(args.output_dir)


def _is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed: Python's, a device's, or PyTorch's CPU allocator's."""
    if isinstance(error, MemoryError):
        return True
    out_of_memory = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, out_of_memory) or "DefaultCPUAllocator: can't allocate memory" in str(error)


def acquire_output_lock(output_dir: str | os.PathLike) -> None:
    """
    Locks `--output_dir` against a second run ([`FolderLock`]); [`ScriptArgumentError`] when another process holds
    it or the folder cannot be created.
    """
    try:
        FolderLock(output_dir, "training run").acquire()
    except FolderInUseError as error:
        raise ScriptArgumentError(f"--output_dir: {error}") from error
    except OSError as error:
        raise ScriptArgumentError(f"--output_dir: cannot create or lock {output_dir!r}: {error}") from error


def release_output_lock(output_dir: str | os.PathLike) -> None:
    """Unlocks `--output_dir` and deletes its `.lock` file, if this process holds it (else does nothing)."""
    FolderLock(output_dir, "training run").release(remove=True)


def exit_without_teardown(code: int = 0) -> NoReturn:
    r"""
    Ends a process of a multi-process launch once everything it writes is written, without tearing down torch.

    Freeing the DDP wrapper destroys the gloo process group, whose destructor joins the group's worker threads while
    holding the GIL; a worker still releasing the tensors of the last collective needs the GIL to do so, and the
    process hangs for ever (one exit in a few dozen on a loaded 2-core machine). Nothing is left to clean up by then
    (trackers finished, files closed, the process group destroyed), so the process flushes its output and exits.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], args: argparse.Namespace, device: torch.device
) -> torch.optim.AdamW:
    """
    AdamW from the `--adam_*`/`--learning_rate` flags; on CPU and CUDA the fused (one kernel per parameter) update,
    which takes 11 instead of 37 ms per step on the CPU benchmark configuration
    (benchmarks/results/speed.md, "Second pass: the non-convolution work and the allocator").
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


def resume_run(accelerator, args: argparse.Namespace, run: RunState, batches_per_epoch: int | None) -> Path | None:
    r"""
    Locks `--output_dir` against a second run, restores the checkpoint named by `--resume_from_checkpoint` (if any)
    into the prepared objects and `run`, and removes leftovers of interrupted saves. `latest` skips damaged
    checkpoints (set aside as `.damaged-checkpoint-<step>`), saying so; an earlier-format checkpoint needs
    `--trust_checkpoint`. Returns the checkpoint used.
    """
    from ..data.loading import DataPosition

    trust = bool(getattr(args, "trust_checkpoint", False))
    if accelerator.is_main_process:
        acquire_output_lock(args.output_dir)
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


StepLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class TrainingLoop:
    r"""
    One launch of a training script after its model is built: the AdamW optimizer and lr schedule, the EMA of the
    weights, `accelerator.prepare`, resuming (`--resume_from_checkpoint`), the optimisation loop with its periodic
    logs, checkpoints and validation, and the end of the run ([`TrainingLoop.finish`]).

    Args:
        accelerator (`accelerate.Accelerator`): From [`make_accelerator`].
        args (`argparse.Namespace`): The script's flags ([`~diti_hf.training.args.add_training_arguments`]).
        model (`torch.nn.Module`): Everything trainable, as one module (DDP wraps it once).
        num_train_timesteps (`int`): `T`, for the per-t loss histogram.
        batches_per_epoch (`int`, *optional*): This process's batches per epoch (`None` for a stream).

    Attributes:
        model (`torch.nn.Module`): `model` as `accelerator.prepare` returned it (DDP-wrapped in a multi-process
            launch): what the loss is computed with.
        unwrapped_model (`torch.nn.Module`): `model` itself, whose parameters the EMA tracks and the scripts save.
    """

    def __init__(
        self, accelerator, args: argparse.Namespace, model: torch.nn.Module, num_train_timesteps: int,
        batches_per_epoch: int | None,
    ):  # fmt: skip
        from diffusers.optimization import get_scheduler

        from .logging_utils import ThroughputMeter

        self.accelerator, self.args = accelerator, args
        self.global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        self.max_train_steps = total_train_steps(args, self.global_batch, batches_per_epoch)
        optimizer = make_optimizer(model.parameters(), args, accelerator.device)
        # The prepared scheduler steps once per process per optimizer step, hence the × num_processes.
        lr_scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer,
            num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=self.max_train_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
        self.unwrapped_model = accelerator.unwrap_model(self.model)
        self.ema = make_ema(self.unwrapped_model.parameters(), args.ema_decay, warmup=args.ema_warmup)
        self.ema.to(accelerator.device)
        accelerator.register_for_checkpointing(self.ema)
        self.run = RunState(args.seed, accelerator.process_index, num_train_timesteps)
        resume_run(accelerator, args, self.run, batches_per_epoch)
        self.ema.to(accelerator.device)  # accelerate restores custom states on the CPU
        check_resumed_ema(self.ema, args)
        self.start_step = self.run.global_step
        budget = getattr(args, "max_train_minutes", None)
        started = getattr(args, "launch_started", None) or time.monotonic()
        self.deadline = None if budget is None else started + 60 * budget
        self.stopped_by_time = False
        self.meter = ThroughputMeter()
        self.last_logged: dict[str, float] = {}
        self.saved_at = self.start_step or None

    def ema_summary(self, logger: logging.Logger) -> str:
        """The EMA phrase of the start-up line ([`~diti_hf.training.ema.ema_summary`])."""
        return ema_summary(self.ema, self.args, self.max_train_steps, logger)

    def train(
        self, data, step_loss: StepLoss, validate: Callable[[int], dict[str, float] | None] | None = None,
        desc: str = "train",
    ) -> None:  # fmt: skip
        r"""
        Optimizer steps until `--max_train_steps`, `--stop_after_steps` more, or the first step after
        `--max_train_minutes`; resumable at every checkpoint.

        Args:
            data ([`~diti_hf.data.TrainingImages`]): This process's batches.
            step_loss (`Callable`): `(prepared model, images, generator) → (loss, per-sample loss, timesteps)`.
            validate (`Callable`, *optional*): `step → metrics or None`, every `--validation_steps` on the main
                process (the metrics are logged).
            desc (`str`, defaults to `"train"`): The progress bar's label.
        """
        from tqdm.auto import tqdm

        accelerator, args, run = self.accelerator, self.args, self.run
        progress = tqdm(
            total=self.max_train_steps, initial=self.start_step, desc=desc,
            disable=not accelerator.is_local_main_process,
        )  # fmt: skip
        stop_at = self.start_step + args.stop_after_steps if args.stop_after_steps else None
        batches = data(run.position)
        with stop_cleanly_on_interrupt(run, args.output_dir, progress):
            while run.global_step < self.max_train_steps and (stop_at is None or run.global_step < stop_at):
                run.position, batch = next(batches)
                images = batch["pixel_values"].to(accelerator.device, non_blocking=True)
                if self._optimize(images, step_loss):
                    progress.update(1)
                    with self.meter.paused():
                        self._after_step(progress, validate)
                    if self._out_of_time():
                        self.stopped_by_time = True
                        break
        progress.close()

    def _out_of_time(self) -> bool:
        """Whether `--max_train_minutes` has passed; every process gets the main process's answer."""
        if self.deadline is None:
            return False
        late = time.monotonic() >= self.deadline
        if self.accelerator.num_processes == 1:
            return late
        flag = torch.tensor([float(late and self.accelerator.is_main_process)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _optimize(self, images: torch.Tensor, step_loss: StepLoss) -> bool:
        """One forward/backward (and optimizer step when the accumulation completes); whether a step completed."""
        accelerator, run = self.accelerator, self.run
        with accelerator.accumulate(self.model):
            loss, per_sample, timesteps = step_loss(self.model, images, run.generator)
            if not run.loss_is_finite(accelerator, loss, self.args.max_nonfinite_steps):
                self.optimizer.zero_grad(set_to_none=True)
                return False
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.args.max_grad_norm is not None:
                accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        run.histogram.update(timesteps, per_sample)
        run.add_loss(loss)
        self.meter.add(images.shape[0] * accelerator.num_processes)
        if not accelerator.sync_gradients:
            return False
        self.ema.step(self.unwrapped_model.parameters())
        run.global_step += 1
        return True

    def _after_step(self, progress, validate: Callable[[int], dict[str, float] | None] | None) -> None:
        """Periodic logs, the checkpoint and validation after optimizer step `run.global_step`."""
        accelerator, args, step = self.accelerator, self.args, self.run.global_step
        ema_decay = {"train/ema_decay": float(self.ema.cur_decay_value or 0.0)}
        self.last_logged = log_periodic(accelerator, args, self.run, self.meter, self.lr_scheduler, ema_decay) or (
            self.last_logged
        )
        if self.last_logged:
            progress.set_postfix(loss=f"{self.last_logged['train/loss']:.4g}")
        if step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args.output_dir, step, self.run.state_dict(), args.checkpoints_total_limit)
            self.saved_at = step
        due = validate is not None and args.validation_steps and step % args.validation_steps == 0
        if due and accelerator.is_main_process and (metrics := validate(step)):
            accelerator.log(metrics, step=step)

    def finish(self, save_final: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        r"""
        Ends the launch on every process: a checkpoint if it stopped early (`--stop_after_steps`, the time budget),
        peak memory, throughput, a fingerprint of each process's weights (they must agree), then on the main process
        `save_final()` (the model folder and final validation, with the EMA weights; skipped after
        `--stop_after_steps`, done at the time budget as at the step count),
        the summary file and line, and the Hub upload. Returns the summary; a process of a multi-process launch
        exits here instead (see [`exit_without_teardown`]).
        """
        from .logging_utils import parameter_fingerprint, peak_memory_mb

        accelerator, args, run, meter = self.accelerator, self.args, self.run, self.meter
        interrupted = run.global_step < self.max_train_steps and not self.stopped_by_time
        if run.global_step < self.max_train_steps and self.saved_at != run.global_step:
            save_checkpoint(
                accelerator, args.output_dir, run.global_step, run.state_dict(), args.checkpoints_total_limit
            )
        memory, memory_kind = peak_memory_mb(accelerator.device)
        fingerprints = accelerator.gather(
            parameter_fingerprint(self.unwrapped_model.parameters()).to(accelerator.device)[None]
        )
        summary = {
            "global_step": run.global_step,
            "max_train_steps": self.max_train_steps,
            "interrupted": interrupted,
            "stopped_at_time_budget": self.stopped_by_time,
            "images_seen": run.global_step * self.global_batch,
            "num_processes": accelerator.num_processes,
            "global_batch_size": self.global_batch,
            "images_this_launch": meter.images,
            "train_seconds_this_launch": round(meter.seconds, 3),
            "throughput_images_per_s": round(meter.images_per_second(), 3),
            "peak_memory_mb": round(memory, 1),
            "peak_memory_kind": memory_kind,
            "skipped_nonfinite_batches": run.nonfinite_total,
            "last_logged": self.last_logged,
            "rank_weight_fingerprints": fingerprints.cpu().tolist(),
        }
        if accelerator.is_main_process:
            self._report(summary, save_final, memory, memory_kind, interrupted)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        if accelerator.is_main_process:
            release_output_lock(args.output_dir)
        if accelerator.num_processes > 1:
            exit_without_teardown()
        return summary

    def _report(self, summary: dict, save_final: Callable, memory: float, memory_kind: str, interrupted: bool) -> None:
        """Main process: the final save, the summary (tracker, file, line) and the Hub upload."""
        accelerator, args, meter = self.accelerator, self.args, self.meter
        if not interrupted:
            summary.update(save_final())
        accelerator.log(
            {"final/throughput_images_per_s": summary["throughput_images_per_s"], "final/peak_memory_mb": memory},
            step=self.run.global_step,
        )
        write_summary(args.output_dir, summary)
        how = "stopped" if interrupted else "finished"
        if self.stopped_by_time:
            how = f"stopped at the time budget ({args.max_train_minutes:g} min)"
        print(
            f"{how} at step {self.run.global_step}/{self.max_train_steps} ({summary['images_seen']} images seen): "
            f"{meter.images} images in {meter.seconds:.1f} s = {summary['throughput_images_per_s']:.1f} images/s "
            f"(global); peak memory {memory:.0f} MiB ({memory_kind}, main process)",
            flush=True,
        )
        if args.push_to_hub and not interrupted:
            repo = push_folder_to_hub(args.output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo)
            print(f"pushed to https://huggingface.co/{repo}", flush=True)

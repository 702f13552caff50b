"""Crash-safe training checkpoints on top of `accelerate`'s `save_state`/`load_state`.

A checkpoint is written into a hidden temporary folder next to its final place, completed with a marker file, and
only then renamed to `checkpoint-<step>` (a rename within one folder is atomic). A run killed while saving therefore
leaves at most a `.tmp-checkpoint-<step>` folder, which resumption ignores and the next save removes; the previous
good checkpoint is untouched, and old checkpoints are pruned only after the new one is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
OLD_PREFIX = ".old-checkpoint-"
COMPLETE_MARKER = "checkpoint_complete.json"
PROCESS_STATE_NAME = "process_state_{}.pt"
_CHECKPOINT_RE = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a `checkpoint-<step>` folder name, or `None` for any other name."""
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a `checkpoint-<step>` folder whose writing finished (it holds the completion marker)."""
    path = Path(path)
    return checkpoint_step(path) is not None and path.is_dir() and (path / COMPLETE_MARKER).is_file()


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in `output_dir`, oldest (smallest step) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if is_complete_checkpoint(p)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the largest step in `output_dir`, or `None`."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_checkpoint(resume_from: str | None, output_dir: str | os.PathLike) -> Path | None:
    r"""
    The checkpoint named by `--resume_from_checkpoint`.

    Args:
        resume_from (`str`, *optional*): `"latest"` (the newest complete checkpoint of `output_dir`, or `None` when
            there is none yet: a fresh start), or the path of a checkpoint folder.
        output_dir (`str`): The run's output folder.

    Raises:
        `ValueError` if a path is given that is not a complete checkpoint.
    """
    if resume_from is None:
        return None
    if resume_from == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from)
    if not path.is_dir():
        raise ValueError(f"`resume_from_checkpoint` {resume_from!r} is not a directory (nor 'latest').")
    if not is_complete_checkpoint(path):
        raise ValueError(
            f"`resume_from_checkpoint` {resume_from!r} is not a complete checkpoint (a `{CHECKPOINT_PREFIX}<step>` "
            f"folder holding {COMPLETE_MARKER}); it may have been interrupted while being written."
        )
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=False)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Deletes leftovers of interrupted saves (temporary and half-replaced folders); returns them."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    stale = [p for p in output_dir.iterdir() if p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
    for path in stale:
        _remove(path)
    return stale


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Deletes the oldest complete checkpoints so that at most `total_limit` remain; returns the deleted ones."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"`checkpoints_total_limit` must be >= 1, got {total_limit}.")
    found = list_checkpoints(output_dir)
    doomed = found[: max(0, len(found) - total_limit)]
    for path in doomed:
        _remove(path)
    return doomed


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    process_state: dict[str, Any] | None = None,
    total_limit: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    r"""
    Saves `accelerator.save_state` plus each process's own state as `output_dir/checkpoint-<step>`, atomically.

    Must be called by every process. Writing goes to `output_dir/.tmp-checkpoint-<step>`; after every process has
    written, the main process adds the completion marker, renames the folder into place, and prunes old checkpoints
    down to `total_limit`.

    Args:
        accelerator (`accelerate.Accelerator`): The run's accelerator (models, optimizers, schedulers and objects
            registered with `register_for_checkpointing` are saved).
        output_dir (`str`): The run's output folder.
        step (`int`): The optimizer step reached.
        process_state (`dict`, *optional*): Per-process state (random generators, data position, ...), saved as
            `process_state_<rank>.pt` by each process.
        total_limit (`int`, *optional*): Keep at most this many complete checkpoints (the new one included).
        metadata (`dict`, *optional*): JSON-able information stored in the marker file.

    Returns:
        `Path`: The final checkpoint folder.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f"{TMP_PREFIX}{step}"
    # On a non-shared filesystem each node writes its own copy, so each node's first process manages its folder.
    save_on_each_node = bool(getattr(accelerator.project_configuration, "save_on_each_node", False))
    manager = accelerator.is_local_main_process if save_on_each_node else accelerator.is_main_process
    if manager:
        output_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            _remove(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if process_state is not None:
        torch.save(process_state, tmp / PROCESS_STATE_NAME.format(accelerator.process_index))
    accelerator.wait_for_everyone()
    if manager:
        marker = {"step": int(step), "num_processes": accelerator.num_processes, "time": time.time()}
        marker.update(metadata or {})
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
        old = output_dir / f"{OLD_PREFIX}{step}"
        if final.exists():  # re-saving a step: move the old copy aside first, so one complete copy always exists
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            _remove(old)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, checkpoint_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    r"""
    Restores `accelerator.load_state(checkpoint_dir)` and returns `(marker, process_state)`, where `process_state` is
    this process's saved state (`None` if the checkpoint has none for this rank).

    Raises:
        `ValueError` if `checkpoint_dir` is not complete or was written by a different number of processes while
        holding per-process state.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not is_complete_checkpoint(checkpoint_dir):
        raise ValueError(f"{str(checkpoint_dir)!r} is not a complete checkpoint.")
    marker = json.loads((checkpoint_dir / COMPLETE_MARKER).read_text())
    accelerator.load_state(str(checkpoint_dir))
    path = checkpoint_dir / PROCESS_STATE_NAME.format(accelerator.process_index)
    saved_processes = marker.get("num_processes", accelerator.num_processes)
    if saved_processes != accelerator.num_processes:
        if any(checkpoint_dir.glob(PROCESS_STATE_NAME.format("*"))):
            # Model, optimizer and EMA states are portable, but per-process random streams and data positions are not.
            accelerator.print(
                f"warning: {checkpoint_dir} was written by {saved_processes} processes, this run has "
                f"{accelerator.num_processes}: weights and optimizer resume, data order and noise do not replay exactly."
            )
        return marker, None
    process_state = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
    return marker, process_state

"""Crash-safe, verifiable training checkpoints on top of `accelerate`'s `save_state`/`load_state`.

A checkpoint is written into a hidden temporary folder next to its final place, completed with a marker file, and
only then renamed to `checkpoint-<step>` (a rename within one folder is atomic). A run killed while saving therefore
leaves at most a `.tmp-checkpoint-<step>` folder, which resumption ignores and the next save removes; the previous
good checkpoint is untouched, and old checkpoints are pruned only after the new one is complete.

Resuming a checkpoint runs no code stored in it. Our own state (each process's random generators and data position,
and the objects registered with `accelerator.register_for_checkpointing`, such as the EMA) is saved as safetensors
with a JSON skeleton, never pickled; accelerate's own optimizer, scheduler and random-state files are read with
`torch.load(weights_only=True)`. The marker records the size and SHA-256 of every file, checked before anything is
loaded, so a damaged or altered checkpoint is reported by file name (and `latest` falls back to an older one that
verifies). Checkpoints written before this format hold pickles and no hashes; they are refused unless trusted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..safe_io import file_record, read_json, record_problem, short_repr

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
OLD_PREFIX = ".old-checkpoint-"
DAMAGED_PREFIX = ".damaged-checkpoint-"
COMPLETE_MARKER = "checkpoint_complete.json"
CHECKPOINT_FORMAT = 2
PROCESS_STATE_NAME = "process_state_{}.safetensors"
CUSTOM_STATE_NAME = "custom_state_{}.safetensors"
# The format before content hashes: pickled per-process and custom states.
LEGACY_PROCESS_STATE_NAME = "process_state_{}.pt"
LEGACY_CUSTOM_STATE_NAME = "custom_checkpoint_{}.pkl"
_STATE_METADATA_KEY = "diti_hf_state"
_CHECKPOINT_RE = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint is damaged, untrusted, or does not fit the run that tries to resume it."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint in the pickled format, which only an explicit `trust_checkpoint=True` may load."""


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
    """The complete checkpoint with the largest step in `output_dir` (verified or not), or `None`."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------- state without pickle
def _flatten(value: Any, key: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    """`value` as JSON, its tensors moved to `tensors` under their path in `value` and replaced by references."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
        return {"__tensor__": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, f"{key}.{i}", tensors, seen) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str) or k.startswith("__")]
        if bad:
            raise TypeError(f"state {key or '<root>'!r}: keys must be strings not starting with '__', got {bad[:3]}")
        return {k: _flatten(v, f"{key}.{k}" if key else k, tensors, seen) for k, v in value.items()}
    raise TypeError(f"state {key or '<root>'!r}: cannot store a {type(value).__name__} without pickle")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor], used: set[str], where: str) -> Any:
    if isinstance(value, list):
        return [_unflatten(v, tensors, used, where) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            key = value["__tensor__"]
            if len(value) != 1 or not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"{where}: a tensor reference {short_repr(value)} points to no stored tensor.")
            used.add(key)
            return tensors[key]
        if "__tuple__" in value:
            if len(value) != 1 or not isinstance(value["__tuple__"], list):
                raise CheckpointError(f"{where}: malformed tuple {short_repr(value)}.")
            return tuple(_unflatten(v, tensors, used, where) for v in value["__tuple__"])
        return {k: _unflatten(v, tensors, used, where) for k, v in value.items()}
    return value


def save_state_file(state: Any, path: str | os.PathLike) -> Path:
    r"""
    Saves a state (nested dicts with string keys, lists, tuples, tensors, numbers, strings, `None`) as one
    safetensors file: the tensors as safetensors, the rest as JSON in its metadata. Loading it runs no code.

    Args:
        state: The state, e.g. `ema.state_dict()`.
        path (`str` or `os.PathLike`): The file to write.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors, set())
    save_file(tensors, os.fspath(path), metadata={_STATE_METADATA_KEY: json.dumps(skeleton, allow_nan=True)})
    return Path(path)


def _check_like(saved: Any, current: Any, key: str, where: str) -> None:
    """`saved` must have the structure of `current`: same keys, lengths, value types, tensor shapes and dtypes."""
    name = key or "<root>"
    if isinstance(current, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            raise CheckpointError(f"{where}: {name} should be a tensor, got {type(saved).__name__}.")
        if saved.shape != current.shape or saved.dtype != current.dtype:
            raise CheckpointError(
                f"{where}: {name} is {saved.dtype} {tuple(saved.shape)}, this run has {current.dtype} "
                f"{tuple(current.shape)}."
            )
    elif isinstance(current, dict):
        if not isinstance(saved, dict) or set(saved) != set(current):
            found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise CheckpointError(f"{where}: {name} should have keys {sorted(current)}, got {short_repr(found)}.")
        for k in current:
            _check_like(saved[k], current[k], f"{key}.{k}" if key else k, where)
    elif isinstance(current, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(current):
            length = len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__
            raise CheckpointError(f"{where}: {name} should hold {len(current)} entries, got {length}.")
        for i, (a, b) in enumerate(zip(saved, current)):
            _check_like(a, b, f"{key}.{i}", where)
    elif current is not None and type(saved) is not type(current):
        raise CheckpointError(f"{where}: {name} should be a {type(current).__name__}, got {short_repr(saved)}.")


def load_state_file(path: str | os.PathLike, like: Any = None) -> Any:
    r"""
    Loads a state written by [`save_state_file`].

    Args:
        path (`str` or `os.PathLike`): The file.
        like (*optional*): The live object's current state (e.g. `ema.state_dict()`); the saved one must have the
            same structure, tensor shapes and dtypes, so that nothing of an unexpected size reaches the object.

    Raises:
        [`CheckpointError`] naming the file if it is not such a state or does not match `like`.
    """
    from safetensors import safe_open

    where = os.fspath(path)
    try:
        with safe_open(where, framework="pt") as f:
            raw = (f.metadata() or {}).get(_STATE_METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except Exception as error:  # safetensors raises its own types for damaged headers
        raise CheckpointError(f"{where}: not a readable state file ({type(error).__name__}: {error}).") from None
    if raw is None:
        raise CheckpointError(f"{where}: not a diti_hf state file (no {_STATE_METADATA_KEY!r} metadata).")
    try:
        skeleton = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{where}: the state's JSON skeleton is malformed.") from None
    used: set[str] = set()
    state = _unflatten(skeleton, tensors, used, where)
    if used != set(tensors):
        raise CheckpointError(
            f"{where}: holds tensors no state entry refers to: {short_repr(sorted(set(tensors) - used))}."
        )
    if like is not None:
        _check_like(state, like, "", where)
    return state


# ------------------------------------------------------------------------------------------------ verification
def read_marker(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """The completion marker of a checkpoint folder (a JSON object with an integer `step`)."""
    path = Path(checkpoint_dir) / COMPLETE_MARKER
    try:
        marker = read_json(path, "checkpoint marker")
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({error}).") from None
    if not isinstance(marker, dict) or isinstance(marker.get("step"), bool) or not isinstance(marker.get("step"), int):
        raise CheckpointError(f"{path}: not a checkpoint marker (a JSON object with an integer `step`).")
    return marker


def is_legacy_checkpoint(marker: dict[str, Any]) -> bool:
    """Whether a marker belongs to the format before content hashes (pickled states)."""
    return "format" not in marker


def _legacy_message(checkpoint_dir: Path) -> str:
    return (
        f"{checkpoint_dir} was written by an earlier diti_hf: its {LEGACY_PROCESS_STATE_NAME.format('*')} and "
        f"{LEGACY_CUSTOM_STATE_NAME.format('*')} files are pickles, which can run code when loaded, and it records "
        "no content hashes. If you wrote it yourself, resume with `--trust_checkpoint` (Python: `trust_checkpoint=True`); the "
        "checkpoints saved from then on hold no pickles."
    )


def checkpoint_problems(checkpoint_dir: str | os.PathLike) -> list[str]:
    r"""
    Why a checkpoint (in the current format) does not verify: every file listed in its marker must exist, with the
    recorded size and SHA-256, and the folder must hold no other file. Empty when it verifies.
    """
    checkpoint_dir = Path(checkpoint_dir)
    try:
        marker = read_marker(checkpoint_dir)
    except CheckpointError as error:
        return [str(error)]
    if marker.get("format") != CHECKPOINT_FORMAT:
        return [f"{COMPLETE_MARKER}: unknown checkpoint format {short_repr(marker.get('format'))}"]
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{COMPLETE_MARKER}: no file list"]
    problems = []
    for name, record in files.items():
        parts = Path(name).parts if isinstance(name, str) else ()
        if not parts or Path(name).is_absolute() or ".." in parts or "\\" in name or name == COMPLETE_MARKER:
            problems.append(f"{short_repr(name)}: not a file name inside the checkpoint")
            continue
        path = checkpoint_dir / name
        if path.is_symlink():
            problems.append(f"{name}: a symbolic link")
            continue
        problem = record_problem(path, record, name)
        if problem:
            problems.append(problem)
    for path in sorted(checkpoint_dir.rglob("*")):
        name = path.relative_to(checkpoint_dir).as_posix()
        if (path.is_file() or path.is_symlink()) and name != COMPLETE_MARKER and name not in files:
            problems.append(f"{name}: not listed in {COMPLETE_MARKER}")
    return problems


def resolve_checkpoint(
    resume_from: str | None,
    output_dir: str | os.PathLike,
    trust_checkpoint: bool = False,
    log: Callable[[str], Any] | None = None,
) -> Path | None:
    r"""
    The checkpoint named by `--resume_from_checkpoint`, verified.

    Args:
        resume_from (`str`, *optional*): `"latest"` (the newest complete checkpoint of `output_dir` that verifies,
            or `None` when there is none yet: a fresh start), or the path of a checkpoint folder.
        output_dir (`str`): The run's output folder.
        trust_checkpoint (`bool`, defaults to `False`): Accept a checkpoint of the earlier, pickled format (it
            cannot be verified, and loading it may run code stored in it).
        log (`Callable`, *optional*): Called with a message when `latest` skips a damaged checkpoint.

    Raises:
        [`CheckpointError`] if a path is given that is not a complete checkpoint or does not verify, if no complete
        checkpoint of `output_dir` verifies, or (as [`UntrustedCheckpointError`]) for an untrusted checkpoint of
        the earlier format.
    """
    if resume_from is None:
        return None
    if resume_from != "latest":
        path = Path(resume_from)
        if not path.is_dir():
            raise CheckpointError(f"{resume_from!r} is not a directory (nor 'latest').")
        if not is_complete_checkpoint(path):
            raise CheckpointError(
                f"{resume_from!r} is not a complete checkpoint (a `{CHECKPOINT_PREFIX}<step>` folder holding "
                f"{COMPLETE_MARKER}); it may have been interrupted while being written."
            )
        problem = _unusable(path, trust_checkpoint)
        if problem:
            raise CheckpointError(f"{path} is damaged: {problem}.")
        return path
    skipped = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = _unusable(path, trust_checkpoint)
        if problem is None:
            if skipped and log is not None:
                log(f"resuming from {path.name}, the newest checkpoint that verifies (skipped: {'; '.join(skipped)})")
            return path
        skipped.append(f"{path.name}: {problem}")
        if log is not None:
            log(f"warning: {path} is damaged ({problem}); trying the previous checkpoint")
    if skipped:
        raise CheckpointError(
            f"no checkpoint in {output_dir} verifies ({'; '.join(skipped)}); delete them to start from scratch."
        )
    return None


def _unusable(path: Path, trust: bool) -> str | None:
    """Why `path` cannot be resumed (damaged), `None` if it can; raises for an untrusted earlier-format one."""
    try:
        marker = read_marker(path)
    except CheckpointError as error:
        return str(error)
    if is_legacy_checkpoint(marker):
        if not trust:
            raise UntrustedCheckpointError(_legacy_message(path))
        return None
    problems = checkpoint_problems(path)
    return "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "") or None


def set_aside_newer_checkpoints(output_dir: str | os.PathLike, resumed: Path) -> list[Path]:
    """
    Renames the checkpoints newer than `resumed` (those `latest` skipped as damaged) to `.damaged-checkpoint-<step>`:
    kept for inspection, but neither resumed nor counted by pruning, which must not delete the good ones instead.
    """
    step = checkpoint_step(resumed)
    moved = []
    for path in list_checkpoints(output_dir):
        if checkpoint_step(path) > step:
            target = path.with_name(f"{DAMAGED_PREFIX}{checkpoint_step(path)}")
            if target.exists():
                _remove(target)
            os.replace(path, target)
            moved.append(target)
    return moved


# ------------------------------------------------------------------------------------------------- housekeeping
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


@contextmanager
def _custom_objects_aside(accelerator) -> Iterator[list[Any]]:
    """Takes the objects registered for checkpointing away from accelerate, which would pickle them."""
    objects = getattr(accelerator, "_custom_objects", None)
    if not objects:
        yield []
        return
    saved = list(objects)
    objects.clear()
    try:
        yield saved
    finally:
        objects[:] = saved


# ------------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    process_state: dict[str, Any] | None = None,
    total_limit: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    r"""
    Saves `accelerator.save_state`, the registered objects and each process's own state as
    `output_dir/checkpoint-<step>`, atomically and with a content hash per file.

    Must be called by every process. Writing goes to `output_dir/.tmp-checkpoint-<step>`; after every process has
    written, the main process records every file's size and SHA-256 in the completion marker, renames the folder
    into place, and prunes old checkpoints down to `total_limit`.

    Args:
        accelerator (`accelerate.Accelerator`): The run's accelerator (models, optimizers and schedulers are saved by
            accelerate; objects registered with `register_for_checkpointing` as `custom_state_<i>.safetensors`).
        output_dir (`str`): The run's output folder.
        step (`int`): The optimizer step reached.
        process_state (`dict`, *optional*): Per-process state (random generators, data position, ...), saved as
            `process_state_<rank>.safetensors` by each process (see [`save_state_file`] for what it may hold).
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
    with _custom_objects_aside(accelerator) as custom:
        accelerator.save_state(str(tmp))
    if manager:
        for index, obj in enumerate(custom):
            save_state_file(obj.state_dict(), tmp / CUSTOM_STATE_NAME.format(index))
    if process_state is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        save_state_file(process_state, tmp / PROCESS_STATE_NAME.format(accelerator.process_index))
    accelerator.wait_for_everyone()
    if manager:
        files = {p.relative_to(tmp).as_posix(): file_record(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        marker = {"format": CHECKPOINT_FORMAT, "step": int(step), "num_processes": accelerator.num_processes}
        marker.update(time=time.time(), files=files)
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


def load_checkpoint(
    accelerator,
    checkpoint_dir: str | os.PathLike,
    trust_checkpoint: bool = False,
    process_state_like: Any = None,
    verify: bool = True,
) -> tuple[dict[str, Any], Any]:
    r"""
    Restores a checkpoint into the prepared objects and returns `(marker, process_state)`, where `process_state` is
    this process's saved state (`None` if the checkpoint has none for this rank).

    Args:
        accelerator (`accelerate.Accelerator`): The run's accelerator, with the same objects prepared and registered
            as when the checkpoint was saved.
        checkpoint_dir (`str` or `os.PathLike`): A complete checkpoint folder.
        trust_checkpoint (`bool`, defaults to `False`): Load a checkpoint of the earlier format, whose pickles are
            unpickled in full (this can run code stored in them: only for checkpoints you wrote yourself).
        process_state_like (*optional*): The live per-process state; the saved one must have its structure.
        verify (`bool`, defaults to `True`): Check every file against the marker's hashes first (skip only when
            [`resolve_checkpoint`] just did).

    Raises:
        [`CheckpointError`] if `checkpoint_dir` is not complete, does not verify, is of the earlier format without
        `trust_checkpoint`, or does not fit the prepared objects.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not is_complete_checkpoint(checkpoint_dir):
        raise CheckpointError(f"{str(checkpoint_dir)!r} is not a complete checkpoint.")
    marker = read_marker(checkpoint_dir)
    legacy = is_legacy_checkpoint(marker)
    if legacy and not trust_checkpoint:
        raise UntrustedCheckpointError(_legacy_message(checkpoint_dir))
    if not legacy and verify:
        problems = checkpoint_problems(checkpoint_dir)
        if problems:
            raise CheckpointError(f"{checkpoint_dir} is damaged: {'; '.join(problems)}.")
    try:
        if legacy:  # trusted: accelerate unpickles the registered objects' states itself
            accelerator.load_state(str(checkpoint_dir))
        else:
            with _custom_objects_aside(accelerator) as custom:
                accelerator.load_state(str(checkpoint_dir))
            for index, obj in enumerate(custom):
                path = checkpoint_dir / CUSTOM_STATE_NAME.format(index)
                obj.load_state_dict(load_state_file(path, like=obj.state_dict()))
    except CheckpointError:
        raise
    except Exception as error:  # accelerate, torch and safetensors raise many types for a state that does not fit
        message = " ".join(str(error).split())[:300] or type(error).__name__
        raise CheckpointError(
            f"{checkpoint_dir} does not fit this run ({type(error).__name__}: {message}); was it written with other "
            "model or optimizer settings?"
        ) from error
    saved_processes = marker.get("num_processes", accelerator.num_processes)
    if saved_processes != accelerator.num_processes:
        pattern = (LEGACY_PROCESS_STATE_NAME if legacy else PROCESS_STATE_NAME).format("*")
        if any(checkpoint_dir.glob(pattern)):
            # Model, optimizer and EMA states are portable, but per-process random streams and data positions are not.
            accelerator.print(
                f"warning: {checkpoint_dir} was written by {saved_processes} processes, this run has "
                f"{accelerator.num_processes}: weights and optimizer resume, data order and noise do not replay exactly."
            )
        return marker, None
    if legacy:
        path = checkpoint_dir / LEGACY_PROCESS_STATE_NAME.format(accelerator.process_index)
        return marker, torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
    path = checkpoint_dir / PROCESS_STATE_NAME.format(accelerator.process_index)
    return marker, load_state_file(path, like=process_state_like) if path.is_file() else None

"""What the `diti-hf` subcommands share: argument types, the model / device / threads / seed flags, pipeline loading,
reading image files, range checks in terms of the flags, the output rule, the grid flags and writing the grids.

Every failure the user can fix is raised as `UsageError` naming the flag; `diti_hf.cli.main` prints it as one line
with exit code 2 (as it does the library's `ValueError`s, whose options `diti_hf._naming.naming_flags` spells as flags).

This module, like every command module's top level, imports neither torch nor diffusers: building a parser (for
`--help`) must stay instant. Library constants that a help text shows are repeated below for that reason, and the
tests check them against the library.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import COMMANDS

PROG = "diti-hf"

# copies for the help texts only (see the module docstring; a test keeps them equal to the library's):
# diti_hf.visualization.DEFAULT_MIN_CELL, diti_hf.sampling.DEFAULT_NUM_INFERENCE_STEPS
DEFAULT_MIN_CELL = 96
DEFAULT_STEPS = 50
# defined here, torch-free, so that every --help starts without torch; diti_hf.demo and diti_hf.app import them
DEFAULT_APP_STEPS = 20  # the app's initial DDIM steps: a UI choice for quick interactive edits on a CPU
DEFAULT_BASELINE = "pretrained/pdae-shapes32"
DEFAULT_FIXTURE = "tests/fixtures/official-diti"
DEFAULT_MODEL = "pretrained/diti-shapes32"


class UsageError(Exception):
    """A command-line mistake, reported like a library error (one line, exit code 2)."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def add_command_parser(subparsers: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of command `name`, with its help line from [`~diti_hf.commands.COMMANDS`] (what `diti-hf --help`
    lists without building it)."""
    return subparsers.add_parser(name, help=COMMANDS[name], **kwargs)


# ------------------------------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_numbers_argument(
    parser: argparse.ArgumentParser, flag: str, default: list[float], metavar: str, what: str
) -> None:
    """A list of finite numbers, e.g. `--alphas 0 0.5 1`; the help ends with the default."""
    shown = " ".join(f"{value:g}" for value in default)
    parser.add_argument(
        flag, nargs="+", type=finite_float, default=default, metavar=metavar, help=f"{what} (default {shown})"
    )


# ---------------------------------------------------------------------------------------------- the model flags
def add_model_arguments(
    parser: argparse.ArgumentParser,
    steps: int | None = DEFAULT_STEPS,
    batch_size: int = 16,
    model_required: bool = True,
) -> None:
    """The flags every model command shares: --model, --device, --batch-size, --steps, --seed, --threads,
    --no-progress."""
    parser.add_argument(
        "--model",
        required=model_required,
        metavar="ID_OR_DIR",
        help="a Hub repo id or a local pipeline folder (loaded with DiTiPipeline.from_pretrained)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, metavar="N", help=f"batch size (default {batch_size})"
    )
    if steps is not None:
        parser.add_argument(
            "--steps", type=positive_int, default=steps, metavar="N", help=f"DDIM steps (default {steps})"
        )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random generators and of diti-shapes data (DDIM inversion/generation are deterministic)",
    )
    add_runtime_arguments(parser)


def add_runtime_arguments(parser: argparse.ArgumentParser, progress: bool = True) -> None:
    """--threads (set by `main` before the command runs) and, for a command with progress bars, --no-progress."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: all cores but one, so that another job on the cores does not stall them)",
    )
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def set_threads(threads: int | None) -> int:
    """`torch.set_num_threads(threads)`, by default all cores but one; returns the number set."""
    import torch

    # torch's own default, one thread per core, stalls whenever another job holds a core: a 20-step inversion took
    # 62-69 s with 2 threads on 2 cores (one busy) and 2.7-2.9 s with 1 (benchmarks/results/speed.md, "Repeated
    # identical inference calls in one process")
    threads = threads or max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_device(name: str) -> str:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r} is not a torch device ({one_line(error)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name!r}: MPS is not available on this machine; use --device cpu")
    return name


def _looks_like_path(name: str) -> bool:
    # a Hub id is "name" or "org/name"; anything else the user typed is meant as a folder
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def load_pipeline(model: str, device: str, flag: str = "--model", progress: bool = True):
    """Loads a DiTiPipeline from a folder or Hub id; every failure is one `UsageError` naming the flag."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    from ..pipelines import DiTiPipeline

    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {model!r} is a file; expected a pipeline folder or a Hub repo id")
        model_or_path = str(path)
    elif _looks_like_path(model):
        raise UsageError(f"{flag} {model!r}: no such folder")
    else:
        model_or_path = model
    was_active = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # the loader's bar would break one-line error output
    try:
        pipe = DiTiPipeline.from_pretrained(model_or_path)
    except (ValueError, TypeError, OSError) as error:
        if model_or_path == model and not path.exists():  # a typo'd local folder ends up here too
            raise UsageError(
                f"{flag} {model!r}: no such folder, and loading it as a Hub repo id failed: {one_line(error)}"
            ) from None
        raise UsageError(f"{flag} {model!r}: cannot load a DiTi pipeline: {one_line(error)}") from None
    finally:
        if was_active:
            diffusers_logging.enable_progress_bar()
    pipe.to(torch.device(device))
    pipe.set_progress_bar_config(disable=not progress, leave=False, desc="DDIM")
    return pipe


def open_pipeline(args: argparse.Namespace):
    """The pipeline of `--model` on `--device`, with progress bars unless `--no-progress`; a `--steps` the model's
    sampling grid cannot hold is refused now, before any image is read."""
    pipe = load_pipeline(args.model, check_device(args.device), progress=not args.no_progress)
    if getattr(args, "steps", None) is not None:
        from ..sampling import check_num_inference_steps

        with library_errors({"num_inference_steps": "--steps"}):
            check_num_inference_steps(args.steps, pipe.partition.num_train_timesteps)
    return pipe


@contextlib.contextmanager
def library_errors(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raises the library's `ValueError` about a parameter (its message starts with `` `name` ``) as a usage
    error naming the flag the value came from, so that the check itself stays in the library."""
    try:
        yield
    except ValueError as error:
        message = one_line(error)
        for name, flag in flags.items():
            if message.startswith(f"`{name}`"):
                raise UsageError(f"{flag}: {message}") from None
        raise


# ------------------------------------------------------------------------------------------------------ images
def image_files(paths: Sequence[str], flag: str) -> list[Path]:
    """
    Expands files and folders into image files: a folder's image files, recursively and sorted, through symbolic
    links to folders inside it (each folder read once); a link to a folder outside it is skipped with a warning naming
    it, or named in the error when the folder holds no image file. Refuses what is neither a file nor a folder.
    """
    from PIL import Image

    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files: list[Path] = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            found, outside = _folder_images(path, extensions)
            skipped = ", ".join(f"{link.relative_to(path).as_posix()} → {link.resolve()}" for link in outside)
            if not found:
                also = f" (skipped, as links to folders outside it: {skipped})" if outside else ""
                raise UsageError(f"{flag} {name!r}: the folder contains no image files{also}")
            if outside:
                warnings.warn(
                    f"{flag} {name!r}: skipped {count(len(outside), 'link')} to folders outside it: {skipped}; give "
                    "those folders themselves to read them",
                    stacklevel=2,
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{flag} {name!r}: no such file or folder")
    return files


def _folder_images(folder: Path, extensions: set[str]) -> tuple[list[Path], list[Path]]:
    """The image files under `folder` (sorted) and the links in it to folders outside it (not followed). Its own
    folders are read first, then the links inside it to folders not read yet (so a file keeps its own name)."""
    root = folder.resolve()
    found: list[Path] = []
    outside: list[Path] = []
    links: list[Path] = []
    seen: set[Path] = set()

    def walk(directory: Path) -> None:
        seen.add(directory.resolve())
        for entry in directory.iterdir():
            if entry.is_symlink() and entry.is_dir():
                links.append(entry)
            elif entry.is_dir():
                walk(entry)
            elif entry.is_file() and entry.suffix.lower() in extensions:
                found.append(entry)

    walk(folder)
    while links:
        link = links.pop(0)
        target = link.resolve()
        if not target.is_relative_to(root):
            outside.append(link)
        elif target not in seen:  # a link back to a folder already read (or a loop) adds nothing
            walk(link)
    return sorted(found), sorted(outside)


def read_images(files: Sequence[Path], flag: str) -> list:
    """The images of `files`, decoded by the package's one image decoder ([`~diti_hf.data.decode_image`]) in their own
    mode: the pipeline's preprocessing converts them, as it does for `encode`, datasets and the app."""
    from ..data.images import BadImageError, decode_image

    images = []
    for index, path in enumerate(files):
        try:
            images.append(decode_image(str(path), index, column=None))
        except BadImageError as error:
            raise UsageError(f"{flag}: {error}") from None
    return images


def read_for_model(pipe: Any, files: Sequence[Path], flag: str) -> list:
    """[`read_images`], saying which images the model will see resized ([`warn_if_resized`])."""
    images = read_images(files, flag)
    warn_if_resized(pipe, files, [image.size for image in images], flag)
    return images


def image_size(path: Path) -> tuple[int, int] | None:
    """`(width, height)` from the file's header, without decoding it; `None` for a file PIL cannot open (reading it
    reports it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # unreadable, too large, not an image: the decoder names the problem when the file is read
        return None


def warn_if_resized(pipe: Any, files: Sequence[Path], sizes: Sequence[tuple[int, int] | None], flag: str) -> None:
    """
    Warns once for the images (`sizes`, `None` for unknown) that are not the model's size: tensors of the wrong size
    are refused, PIL images are resized. Silent where the model's own preprocessing (a crop box) is what every raw
    image goes through anyway.
    """
    processor = pipe.image_processor
    if processor is not None and processor.crop_box is not None:
        return
    size = int(pipe.encoder.config.sample_size)
    known = [(f, s) for f, s in zip(files, sizes) if s is not None]
    other = [(f, s) for f, s in known if s != (size, size)]
    if other:
        (first, (w, h)), n = other[0], len(other)
        warnings.warn(
            f"{flag}: {n} of {len(known)} image(s) are not {size}×{size} (e.g. {first.name}, {w}×{h}); the model "
            f"sees them resized (shorter side to {size}) and centre-cropped",
            stacklevel=2,
        )


def batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ------------------------------------------------------------------------------------------------------ ranges
def add_range_arguments(parser: argparse.ArgumentParser, repeat: bool, what: str) -> None:
    action = "append" if repeat else "store"
    again = " (repeatable)" if repeat else ""
    parser.add_argument(
        "--timesteps",
        nargs=2,
        type=int,
        action=action,
        metavar=("LO", "HI"),
        help=(
            f"time-step range [LO, HI) of the chunks to {what}{again} (DiTi aims for late t to hold coarse "
            "attributes, early t fine ones)"
        ),
    )
    parser.add_argument(
        "--chunks", nargs=2, type=int, action=action, metavar=("I", "J"), help=f"chunk range [I, J) instead{again}"
    )


def _resolve(partition: Any, kind: str, bounds: tuple[int, int]) -> Any:
    """The partition's [`~diti_hf.TimestepPartition.resolve_range`] of a `"timesteps"` or `"chunks"` range; `None`
    where it refuses the range or the range selects nothing."""
    try:
        resolved = partition.resolve_range(**{kind: bounds})
    except ValueError:
        return None
    return None if resolved.empty else resolved


def check_ranges(
    pipe: Any, timesteps: list | None, chunks: list | None, required: bool = True, single: bool = False
) -> list[tuple]:
    """Validated `[("timesteps", (lo, hi)) | ("chunks", (i, j))]` against the pipeline's partition, the time-step
    ranges first (the order in which `pipe.swap` takes them); warns where whole chunks widen a time-step range."""
    if single and timesteps and chunks:
        raise UsageError("give --timesteps or --chunks, not both")
    if not timesteps and not chunks:
        if required:
            raise UsageError("give at least one --timesteps LO HI (or --chunks I J)")
        return []
    partition = pipe.partition
    T, k = partition.num_train_timesteps, partition.num_chunks
    ranges = []
    for lo, hi in timesteps or []:
        resolved = _resolve(partition, "timesteps", (lo, hi))
        if resolved is None:
            raise UsageError(
                f"--timesteps {lo} {hi}: a time-step range must satisfy 0 <= LO < HI <= T={T} (half-open [LO, HI) "
                f"inside [0, {T}))"
            )
        ranges.append(("timesteps", (lo, hi)))
        if resolved.widened:
            start, end = resolved.timesteps
            warnings.warn(
                f"--timesteps {lo} {hi}: z is edited by whole chunks, so this range acts on t in [{start}, {end}) "
                f"({_chunks_text(*resolved.chunks)}); give --timesteps {start} {end} to say so",
                stacklevel=2,
            )
    for i, j in chunks or []:
        if _resolve(partition, "chunks", (i, j)) is None:
            raise UsageError(f"--chunks {i} {j}: a chunk range must satisfy 0 <= I < J <= {k} (the model's chunks)")
        ranges.append(("chunks", (i, j)))
    return ranges


def _chunks_text(i: int, j: int) -> str:
    return f"chunk {i}" if j == i + 1 else f"chunks {i}..{j - 1}"


def range_text(pipe: Any, kind: str, bounds: tuple[int, int]) -> str:
    """`t in [lo, hi) (chunks i..j)` for the grid captions: the time-steps of the whole chunks the range selects."""
    resolved = pipe.partition.resolve_range(**{kind: bounds})
    lo, hi = resolved.timesteps
    return f"t in [{lo}, {hi}) ({_chunks_text(*resolved.chunks)})"


def range_label(kind: str, bounds: tuple[int, int]) -> str:
    return f"{'t' if kind == 'timesteps' else 'chunks'}{bounds[0]}-{bounds[1]}"


# ------------------------------------------------------------------------------------------------------ output
def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def output_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output-dir {name!r} exists and is not a folder")
    return path


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist already")


def check_new_files(paths: Sequence[Path], flag: str, overwrite: bool) -> None:
    """The rule of every output file: an existing one is replaced only with `--overwrite`. Checked before any work."""
    existing = [str(path) for path in paths if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        raise UsageError(f"{flag}: {', '.join(existing)} exists already; pass --overwrite to replace it")


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the PNG grid(s)")
    add_overwrite_argument(parser)
    parser.add_argument(
        "--zoom",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"upscale every grid cell N times, nearest neighbour (default: cells of at least {DEFAULT_MIN_CELL} px)",
    )


def grid_paths(args: argparse.Namespace, names: Sequence[str]) -> list[Path]:
    """The grid files `names` in `--output-dir`, checked by the output rule ([`check_new_files`]) before any work."""
    out = output_dir(args.output_dir)
    paths = [out / name for name in names]
    check_new_files(paths, "--output-dir", args.overwrite)
    return paths


def grid_zoom(args: argparse.Namespace, size: int) -> int:
    from ..visualization import default_zoom

    return args.zoom if args.zoom is not None else default_zoom(size)


def shown(pipe: Any, images: list) -> list:
    """The images as the model sees them (after its preprocessing), as PIL, for the grids."""
    return pipe.postprocess(pipe.preprocess(images), "pil")


def save_grid(rows: list, path: Path, zoom: int, caption: str) -> Path:
    """Saves the grid with `caption` (what its rows and columns are) under it, and prints both."""
    from .. import visualization

    visualization.save_grid(rows, path, zoom=zoom, caption=caption)
    print(f"wrote {path}: {' '.join(caption.split())}")
    return path

"""The `diti-hf` command line: `demo`, `encode`, `reconstruct`, `swap`, `interpolate`, `edit`, `evaluate`,
`partition`, `convert`.

The model commands share `--model` (Hub id or pipeline folder), `--device`, `--batch-size`, `--steps` (DDIM) and
`--seed`; the image commands write PNG grids (`diti_hf.demo.image_grid`), `encode` writes features through
`diti_hf.features`. Each subcommand is one `_add_<name>_parser(subparsers)` function that adds its parser and sets
`handler` (a function of the parsed arguments returning an exit code); `_SUBCOMMANDS` lists them in help order.
Expected failures (command-line mistakes, bad inputs and files: `ValueError`, `TypeError`, `OSError`, a folder in use,
running out of memory) are reported as one line `diti-hf: error: ...` with exit code 2; anything else (a bug) as one
line with exit code 1 that says to run with `--debug` for the traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .cpu_memory import reuse_freed_memory
from .safe_io import FolderInUseError

PROG = "diti-hf"


class _UsageError(Exception):
    """A command-line mistake, reported like a library error (one line, exit code 2)."""


class _ArgumentParser(argparse.ArgumentParser):
    # argparse prints the whole usage block and exits; we want one line and a return code (tests call `main`).
    def error(self, message: str) -> None:
        raise _UsageError(message)


# ------------------------------------------------------------------------------------------------ shared helpers
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_model_arguments(
    parser: argparse.ArgumentParser, steps: int | None = 50, batch_size: int = 16, model_required: bool = True
) -> None:
    """The flags every model command shares: --model, --device, --batch-size, --steps, --seed, --no-progress."""
    parser.add_argument(
        "--model",
        required=model_required,
        metavar="ID_OR_DIR",
        help="a Hub repo id or a local pipeline folder (loaded with DiTiPipeline.from_pretrained)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=batch_size, metavar="N", help=f"batch size (default {batch_size})"
    )
    if steps is not None:
        parser.add_argument(
            "--steps", type=_positive_int, default=steps, metavar="N", help=f"DDIM steps (default {steps})"
        )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random generators and of diti-shapes data (DDIM inversion/generation are deterministic)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: all cores but one, so that another job on the cores does not stall them)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _set_threads(threads: int | None) -> int:
    """`torch.set_num_threads(threads)`, by default all cores but one; returns the number set."""
    import torch

    # torch's own default, one thread per core, stalls whenever another job holds a core: a 20-step inversion took
    # 62-69 s with 2 threads on 2 cores (one busy) and 2.7-2.9 s with 1 (benchmarks/RESULTS.md)
    threads = threads or max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))
    torch.set_num_threads(threads)
    return threads


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_device(name: str) -> str:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise _UsageError(f"--device {name!r} is not a torch device ({_one_line(error)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _UsageError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise _UsageError(f"--device {name!r}: MPS is not available on this machine; use --device cpu")
    return name


def _looks_like_path(name: str) -> bool:
    # a Hub id is "name" or "org/name"; anything else the user typed is meant as a folder
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def _load_pipeline(model: str, device: str, flag: str = "--model", progress: bool = True):
    """Loads a DiTiPipeline from a folder or Hub id; every failure is one `_UsageError` naming the flag."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    from .pipelines import DiTiPipeline

    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise _UsageError(f"{flag} {model!r} is a file; expected a pipeline folder or a Hub repo id")
        model_or_path = str(path)
    elif _looks_like_path(model):
        raise _UsageError(f"{flag} {model!r}: no such folder")
    else:
        model_or_path = model
    was_active = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # the loader's bar would break one-line error output
    try:
        pipe = DiTiPipeline.from_pretrained(model_or_path)
    except (ValueError, TypeError, OSError) as error:
        if model_or_path == model and not path.exists():  # a typo'd local folder ends up here too
            raise _UsageError(
                f"{flag} {model!r}: no such folder, and loading it as a Hub repo id failed: {_one_line(error)}"
            ) from None
        raise _UsageError(f"{flag} {model!r}: cannot load a DiTi pipeline: {_one_line(error)}") from None
    finally:
        if was_active:
            diffusers_logging.enable_progress_bar()
    pipe.to(torch.device(device))
    pipe.set_progress_bar_config(disable=not progress, leave=False, desc="DDIM")
    return pipe


def _image_files(paths: Sequence[str], flag: str) -> list[Path]:
    """Expands files and folders (recursively, sorted) into image files; refuses what is neither."""
    from PIL import Image

    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files: list[Path] = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                raise _UsageError(f"{flag} {name!r}: the folder contains no image files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise _UsageError(f"{flag} {name!r}: no such file or folder")
    return files


def _read_images(files: Sequence[Path], flag: str) -> list:
    from PIL import Image

    images = []
    for index, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.convert("RGB"))
        except Exception as error:  # PIL raises many types on corrupt files; all mean "unreadable"
            raise _UsageError(
                f"{flag}: image {index} ({str(path)!r}) could not be read: {type(error).__name__}: {error}"
            ) from None
    return images


def _check_ranges(
    pipe, timesteps: list | None, chunks: list | None, required: bool = True, single: bool = False
) -> list[tuple]:
    """Validated `[("timesteps", (lo, hi)) | ("chunks", (i, j))]` against the pipeline's partition."""
    if single and timesteps and chunks:
        raise _UsageError("give --timesteps or --chunks, not both")
    if not timesteps and not chunks:
        if required:
            raise _UsageError("give at least one --timesteps LO HI (or --chunks I J)")
        return []
    T, k = pipe.partition.num_train_timesteps, pipe.partition.num_chunks
    ranges = []
    for lo, hi in timesteps or []:
        if not 0 <= lo < hi <= T:
            raise _UsageError(
                f"--timesteps {lo} {hi}: a time-step range must satisfy 0 <= LO < HI <= T={T} (half-open [LO, HI) "
                f"inside [0, {T}))"
            )
        ranges.append(("timesteps", (lo, hi)))
        effective = _effective_timesteps(pipe, lo, hi)
        if effective != (lo, hi):
            i, j = pipe.partition.chunks_for_timesteps(lo, hi)
            which = f"chunk {i}" if j == i + 1 else f"chunks {i}..{j - 1}"
            warnings.warn(
                f"--timesteps {lo} {hi}: z is edited by whole chunks, so this range acts on t in "
                f"[{effective[0]}, {effective[1]}) ({which}); give --timesteps {effective[0]} {effective[1]} to say so",
                stacklevel=2,
            )
    for i, j in chunks or []:
        if not 0 <= i < j <= k:
            raise _UsageError(f"--chunks {i} {j}: a chunk range must satisfy 0 <= I < J <= {k} (the model's chunks)")
        ranges.append(("chunks", (i, j)))
    return ranges


def _range_label(kind: str, bounds: tuple[int, int]) -> str:
    return f"{'t' if kind == 'timesteps' else 'chunks'}{bounds[0]}-{bounds[1]}"


def _effective_timesteps(pipe, lo: int, hi: int) -> tuple[int, int]:
    """The time-steps of the chunks that `[lo, hi)` meets: what an edit of that range actually changes."""
    i, j = pipe.partition.chunks_for_timesteps(lo, hi)
    return pipe.partition.chunk_timesteps(i)[0], pipe.partition.chunk_timesteps(j - 1)[1]


def _range_text(pipe, kind: str, bounds: tuple[int, int]) -> str:
    """`t in [lo, hi) (chunks i..j)` for the grid captions, with the range widened to whole chunks."""
    partition = pipe.partition
    i, j = partition.chunks_for_timesteps(*bounds) if kind == "timesteps" else bounds
    lo, hi = partition.chunk_timesteps(i)[0], partition.chunk_timesteps(j - 1)[1]
    return f"t in [{lo}, {hi}) (chunk {i})" if j == i + 1 else f"t in [{lo}, {hi}) (chunks {i}..{j - 1})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _output_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise _UsageError(f"--output-dir {name!r} exists and is not a folder")
    return path


def _zoom(args: argparse.Namespace, size: int) -> int:
    # tiny images are unreadable at 1:1; by default blow cells up to at least 64 px
    return args.zoom if args.zoom is not None else max(1, math.ceil(64 / size))


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the PNG grid(s)")
    parser.add_argument(
        "--zoom",
        type=_positive_int,
        default=None,
        metavar="N",
        help="upscale every grid cell N times, nearest neighbour (default: cells of at least 64 px)",
    )


def _shown(pipe, images: list):
    """The images as the model sees them (after its preprocessing), as PIL, for the grids."""
    return pipe.postprocess(pipe.preprocess(images), "pil")


def _save_grid(rows: list, path: Path, zoom: int, caption: str) -> Path:
    """Saves the grid with `caption` (what its rows and columns are) under it, and prints both."""
    from .demo import image_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, zoom=zoom, caption=caption).save(path)
    print(f"wrote {path}: {' '.join(caption.split())}")
    return path


def _warn_if_resized(pipe, files: Sequence[Path], images: list, flag: str) -> None:
    # Tensors of the wrong size are refused, PIL images are resized: say so, unless the model's own preprocessing
    # (a crop box) is what every raw image goes through anyway.
    processor = pipe.image_processor
    if processor is not None and processor.crop_box is not None:
        return
    size = int(pipe.encoder.config.sample_size)
    other = [(f, im.size) for f, im in zip(files, images) if im.size != (size, size)]
    if other:
        (first, (w, h)), n = other[0], len(other)
        warnings.warn(
            f"{flag}: {n} of {len(images)} image(s) are not {size}×{size} (e.g. {first.name}, {w}×{h}); the model "
            f"sees them resized (shorter side to {size}) and centre-cropped, as shown in the grid",
            stacklevel=2,
        )


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ------------------------------------------------------------------------------------------------------- encode
def _add_encode_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode images into time-step-modular features z (.npy / .parquet, optionally sharded)",
        description=(
            "Encode image files or a 🤗 dataset into z with the model's encoder. Writes one file (--output) or, for "
            "large inputs, shards written atomically and a merged file (--output-dir; resumable with --resume). "
            "Metadata (latent_dim, num_chunks, chunk_end_dims, chunk time-step ranges, model, image ids/paths) goes "
            "in a JSON sidecar (.npy) or in the parquet columns and schema metadata."
        ),
    )
    _add_model_arguments(parser, steps=None, batch_size=64)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a folder of image files (searched recursively)")
    source.add_argument(
        "--dataset", metavar="NAME", help="a 🤗 Hub dataset id, a saved dataset folder, or diti-shapes (procedural)"
    )
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--image-column", default=None, help="dataset image column (default: image, or the only one)")
    parser.add_argument(
        "--num-images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="encode only the first N images (for diti-shapes: the number generated, default 10000)",
    )
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="skip unreadable images (each is reported) instead of stopping"
    )
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--output", metavar="FILE", help="one output file, FILE.npy (+ FILE.json) or FILE.parquet")
    output.add_argument(
        "--output-dir", metavar="DIR", help="sharded output: shard-*.npy, manifest.json and a merged features file"
    )
    parser.add_argument(
        "--format", choices=("npy", "parquet"), default="npy", help="merged file of --output-dir (default: npy)"
    )
    parser.add_argument(
        "--shard-size", type=_positive_int, default=4096, metavar="N", help="images per shard (default 4096)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --output-dir extraction")
    parser.set_defaults(handler=_run_encode)


def _run_encode(args: argparse.Namespace) -> int:
    from .features import encode_images, extract_features, feature_metadata, write_features

    if args.output is not None:
        suffix = Path(args.output).suffix.lower()
        if suffix not in (".npy", ".parquet"):
            raise _UsageError(
                f"--output {args.output!r}: unknown extension {suffix or '(none)'!r}; use .npy or .parquet"
            )
        if args.resume:
            raise _UsageError("--resume needs --output-dir (a single --output file is written at once)")
    else:
        _output_dir(args.output_dir)
    if args.images is not None:
        if args.split != "train" or args.image_column is not None:
            raise _UsageError("--split and --image-column apply to --dataset, not --images")
        if not Path(args.images).is_dir():
            raise _UsageError(f"--images {args.images!r}: no such folder")
        files = _image_files([args.images], "--images")[: args.num_images]
    device = _check_device(args.device)
    pipe = _load_pipeline(args.model, device, progress=not args.no_progress)
    metadata = feature_metadata(pipe, args.model)

    root = None
    if args.images is not None:
        from .features import printable_name

        # ids by the name inside --images; a file that resolves outside it (a symbolic link) is a bad image
        base = Path(args.images).expanduser()
        root, names = base.resolve(), [p.relative_to(base) for p in files]
        images = [base.absolute() / name for name in names]
        ids = [printable_name(name.as_posix()) for name in names]
        metadata["source"] = {"kind": "images", "root": printable_name(str(root)), "num_files": len(files)}
        column = None
    else:
        from .data import SHAPES_DATASET_NAME, load_image_dataset, resolve_image_column

        images = load_image_dataset(
            dataset_name=args.dataset,
            split=args.split,
            num_images=args.num_images,
            seed=args.seed,
            resolution=int(pipe.encoder.config.sample_size),
        )
        column = resolve_image_column(images, args.image_column)
        ids = None
        metadata["source"] = {
            "kind": "dataset",
            "name": args.dataset,
            "split": args.split,
            "image_column": column,
            "num_images": len(images),
            "seed": args.seed if args.dataset == SHAPES_DATASET_NAME else None,
        }

    if args.output is not None:
        features, kept_ids, paths, skipped = encode_images(
            pipe, images, args.batch_size, column, ids, args.skip_bad_images, progress=not args.no_progress, root=root
        )
        metadata["skipped"] = skipped
        has_paths = bool(paths) and all(p is not None for p in paths)
        written = write_features(args.output, features, kept_ids, metadata, paths if has_paths else None)
        print(f"encoded {_count(features.shape[0], 'image')} → {', '.join(str(p) for p in written)}")
    else:
        result = extract_features(
            pipe,
            images,
            args.output_dir,
            shard_size=args.shard_size,
            resume=args.resume,
            batch_size=args.batch_size,
            image_column=column,
            ids=ids,
            skip_bad_images=args.skip_bad_images,
            output_format=args.format,
            metadata=metadata,
            progress=not args.no_progress,
            root=root,
        )
        skipped = result.skipped
        resumed = f" (resumed after {result.resumed_shards} complete shards)" if result.resumed_shards else ""
        print(
            f"encoded {_count(result.num_features, 'image')} in {_count(result.num_shards, 'shard')}{resumed} → {result.output}"
        )
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): " + ", ".join(str(s["path"] or s["id"]) for s in skipped))
    return 0


# -------------------------------------------------------------------------------------------------- reconstruct
def _add_reconstruct_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="invert and regenerate images (autoencoding); writes reconstruction.png",
        description="Encode, invert with masked DDIM and regenerate images. Writes OUTPUT_DIR/reconstruction.png: "
        "the inputs (as the model sees them) in the first row, their reconstructions below.",
    )
    _add_model_arguments(parser)
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    _add_grid_arguments(parser)
    parser.set_defaults(handler=_run_reconstruct)


def _run_reconstruct(args: argparse.Namespace) -> int:
    files = _image_files(args.images, "--images")
    out = _output_dir(args.output_dir)
    pipe = _load_pipeline(args.model, _check_device(args.device), progress=not args.no_progress)
    images = _read_images(files, "--images")
    _warn_if_resized(pipe, files, images, "--images")
    recon = []
    for batch in _batches(images, args.batch_size):
        recon += pipe.reconstruct(batch, num_inference_steps=args.steps, output_type="pil").images
    caption = f"top: the inputs as the model sees them; bottom: their reconstructions ({args.steps} DDIM steps)"
    _save_grid([_shown(pipe, images), recon], out / "reconstruction.png", _zoom(args, recon[0].width), caption)
    return 0


# --------------------------------------------------------------------------------------------------------- swap
def _add_range_arguments(parser: argparse.ArgumentParser, repeat: bool, what: str) -> None:
    action = "append" if repeat else "store"
    again = " (repeatable)" if repeat else ""
    parser.add_argument(
        "--timesteps",
        nargs=2,
        type=int,
        action=action,
        metavar=("LO", "HI"),
        help=f"time-step range [LO, HI) of the chunks to {what}{again}; late t = coarse attributes, early t = fine",
    )
    parser.add_argument(
        "--chunks", nargs=2, type=int, action=action, metavar=("I", "J"), help=f"chunk range [I, J) instead{again}"
    )


def _add_swap_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "swap",
        help="counterfactuals: swap the chunks of a time-step range from targets into sources; PNG grids",
        description=(
            "For every source × target pair and every range, generate the source with the chunks of z tied to the "
            "range taken from the target. Writes OUTPUT_DIR/swap_<range>.png per range: targets in the first row, "
            "sources in the first column."
        ),
    )
    _add_model_arguments(parser)
    parser.add_argument("--source", nargs="+", required=True, metavar="PATH", help="source image files or folders")
    parser.add_argument("--target", nargs="+", required=True, metavar="PATH", help="target image files or folders")
    _add_range_arguments(parser, repeat=True, what="swap")
    _add_grid_arguments(parser)
    parser.set_defaults(handler=_run_swap)


def _run_swap(args: argparse.Namespace) -> int:
    from .demo import swap_grid_images

    source_files = _image_files(args.source, "--source")
    target_files = _image_files(args.target, "--target")
    out = _output_dir(args.output_dir)
    pipe = _load_pipeline(args.model, _check_device(args.device), progress=not args.no_progress)
    ranges = _check_ranges(pipe, args.timesteps, args.chunks)
    sources, targets = _read_images(source_files, "--source"), _read_images(target_files, "--target")
    _warn_if_resized(pipe, source_files, sources, "--source")
    _warn_if_resized(pipe, target_files, targets, "--target")
    shown_s, shown_t = _shown(pipe, sources), _shown(pipe, targets)
    zoom = _zoom(args, shown_s[0].width)
    grids = swap_grid_images(pipe, sources, targets, ranges, args.steps, args.batch_size)
    n_t = len(targets)
    for (kind, bounds), images in zip(ranges, grids):
        rows = [[None, *shown_t]] + [[shown_s[i], *images[i * n_t : (i + 1) * n_t]] for i in range(len(sources))]
        caption = (
            f"swap of {_range_text(pipe, kind, bounds)}. First row: targets; first column: sources; each other "
            f"image: its row's source with the z-chunks of {_range_text(pipe, kind, bounds)} taken from its "
            f"column's target ({args.steps} DDIM steps)"
        )
        _save_grid(rows, out / f"swap_{_range_label(kind, bounds)}.png", zoom, caption)
    return 0


# -------------------------------------------------------------------------------------------------- interpolate
def _add_interpolate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "interpolate",
        help="interpolate the chunks of one time-step range between image pairs; interpolation.png",
        description=(
            "For each (source, target) pair, lerp the dims of one time-step range of z from the source's to the "
            "target's (the rest stays the source's) and generate from the source's x_T (with --slerp, from the "
            "slerp of both x_T). Writes OUTPUT_DIR/interpolation.png: one row per pair, source | α… | target."
        ),
    )
    _add_model_arguments(parser)
    parser.add_argument("--source", nargs="+", required=True, metavar="PATH", help="image A files or folders")
    parser.add_argument(
        "--target", nargs="+", required=True, metavar="PATH", help="image B files or folders (as many)"
    )
    parser.add_argument(
        "--alphas",
        nargs="+",
        type=_finite_float,
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        metavar="A",
        help="interpolation weights, 0 = source (default 0 0.25 0.5 0.75 1)",
    )
    _add_range_arguments(parser, repeat=False, what="interpolate (default: all of z)")
    parser.add_argument("--slerp", action="store_true", help="also interpolate x_T spherically (official figures)")
    _add_grid_arguments(parser)
    parser.set_defaults(handler=_run_interpolate)


def _run_interpolate(args: argparse.Namespace) -> int:
    sources = _image_files(args.source, "--source")
    targets = _image_files(args.target, "--target")
    if len(sources) != len(targets):
        raise _UsageError(
            f"--source has {len(sources)} images but --target has {len(targets)}; give one target per source"
        )
    out = _output_dir(args.output_dir)
    pipe = _load_pipeline(args.model, _check_device(args.device), progress=not args.no_progress)
    timesteps, chunks = [args.timesteps] if args.timesteps else None, [args.chunks] if args.chunks else None
    ranges = _check_ranges(pipe, timesteps, chunks, required=False, single=True)
    kwargs = {ranges[0][0]: ranges[0][1]} if ranges else {}
    source_files, target_files = sources, targets
    sources, targets = _read_images(source_files, "--source"), _read_images(target_files, "--target")
    _warn_if_resized(pipe, source_files, sources, "--source")
    _warn_if_resized(pipe, target_files, targets, "--target")
    n_a = len(args.alphas)
    images = []
    for lo in range(0, len(sources), args.batch_size):
        images += pipe.interpolate(
            sources[lo : lo + args.batch_size],
            targets[lo : lo + args.batch_size],
            alphas=args.alphas,
            slerp_latents=args.slerp,
            num_inference_steps=args.steps,
            batch_size=args.batch_size,
            output_type="pil",
            **kwargs,
        ).images
    shown_s, shown_t = _shown(pipe, sources), _shown(pipe, targets)
    rows = [[shown_s[i], *images[i * n_a : (i + 1) * n_a], shown_t[i]] for i in range(len(sources))]
    what = f"the z-dims of {_range_text(pipe, *ranges[0])}" if ranges else "all of z"
    alphas = ", ".join(f"{a:g}" for a in args.alphas)
    caption = (
        f"each row: source | alpha = {alphas} | target; {what} moved from the source's value to the target's, "
        f"generated from {'the slerp of both x_T' if args.slerp else 'the source x_T'} ({args.steps} DDIM steps)"
    )
    _save_grid(rows, out / "interpolation.png", _zoom(args, shown_s[0].width), caption)
    return 0


# --------------------------------------------------------------------------------------------------------- edit
def _add_edit_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "edit",
        help="move images along a linear classifier direction in z; edit.png",
        description=(
            "Edit images along a direction w of z (e.g. a linear probe's weight for one attribute): "
            "z' = z + s·√d·σ⊙w/‖w‖, generated from each image's own x_T. Writes OUTPUT_DIR/edit.png: one row per "
            "image, the input then one column per scale."
        ),
    )
    _add_model_arguments(parser)
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    parser.add_argument("--direction", required=True, metavar="FILE.npy", help="w: a (latent_dim,) array")
    parser.add_argument(
        "--scales",
        nargs="+",
        type=_finite_float,
        default=[-1.0, -0.5, 0.0, 0.5, 1.0],
        metavar="S",
        help="step sizes s (default -1 -0.5 0 0.5 1)",
    )
    parser.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help="keep the K largest |w| dims")
    parser.add_argument(
        "--z-std", default=None, metavar="FILE.npy", help="per-dim std σ of z (default: the encoder's, else ones)"
    )
    _add_grid_arguments(parser)
    parser.set_defaults(handler=_run_edit)


def _load_vector(path: str, flag: str, dim: int):
    import numpy as np
    import torch

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise _UsageError(f"{flag} {path!r}: cannot read a .npy array ({_one_line(error)})") from None
    array = np.asarray(array)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.shape != (dim,) or not np.issubdtype(array.dtype, np.number):
        raise _UsageError(f"{flag} {path!r}: expected {dim} numbers (the model's latent_dim), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise _UsageError(f"{flag} {path!r}: contains NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))


def _run_edit(args: argparse.Namespace) -> int:
    files = _image_files(args.images, "--images")
    for flag, path in (("--direction", args.direction), ("--z-std", args.z_std)):
        if path is not None and not Path(path).is_file():
            raise _UsageError(f"{flag} {path!r}: no such file")
    out = _output_dir(args.output_dir)
    pipe = _load_pipeline(args.model, _check_device(args.device), progress=not args.no_progress)
    dim = int(pipe.partition.latent_dim)
    direction = _load_vector(args.direction, "--direction", dim)
    if not direction.abs().sum() > 0:
        raise _UsageError(f"--direction {args.direction!r}: the direction is all zeros")
    z_std = None if args.z_std is None else _load_vector(args.z_std, "--z-std", dim)
    if args.top_k is not None and args.top_k > dim:
        raise _UsageError(f"--top-k {args.top_k}: must be at most the model's latent_dim {dim}")
    images = _read_images(files, "--images")
    _warn_if_resized(pipe, files, images, "--images")
    edited = []
    for batch in _batches(images, args.batch_size):
        edited += pipe.edit(
            batch,
            direction=direction,
            scales=args.scales,
            z_std=z_std,
            top_k=args.top_k,
            num_inference_steps=args.steps,
            batch_size=args.batch_size,
            output_type="pil",
        ).images
    shown, n = _shown(pipe, images), len(args.scales)
    rows = [[shown[i], *edited[i * n : (i + 1) * n]] for i in range(len(images))]
    dims = f"its {args.top_k} largest dims" if args.top_k is not None else "all dims"
    caption = (
        f"each row: the input | scale s = {', '.join(f'{s:g}' for s in args.scales)} along --direction "
        f"({dims}; s = 0 is the reconstruction; {args.steps} DDIM steps)"
    )
    _save_grid(rows, out / "edit.png", _zoom(args, shown[0].width), caption)
    return 0


# ----------------------------------------------------------------------------------------------------- evaluate
def _add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="probes, time-step alignment, counterfactual score, reconstruction → report.json + plots",
        description=(
            "Run diti_hf.evaluation on a dataset with known factors (ClassLabel columns; default the procedural "
            "diti-shapes at the model's resolution): linear probes, time-step alignment, counterfactual flip rates and "
            "reconstruction, with random-encoder and raw-pixel baselines. Writes OUTPUT_DIR/report.json and plots."
        ),
    )
    _add_model_arguments(parser, steps=20, batch_size=16)
    parser.add_argument("--baseline", default=None, metavar="ID_OR_DIR", help="a second pipeline (e.g. PDAE)")
    parser.add_argument(
        "--dataset", default="diti-shapes", help="diti-shapes (default), a saved dataset folder or a Hub id"
    )
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument(
        "--num-images", type=_positive_int, default=2000, metavar="N", help="images used (default 2000)"
    )
    parser.add_argument("--factors", nargs="+", default=None, help="factor columns (default: every ClassLabel column)")
    parser.add_argument(
        "--probe-epochs", type=_positive_int, default=15, metavar="N", help="probe epochs (default 15)"
    )
    parser.add_argument(
        "--swap-pairs", type=_positive_int, default=64, metavar="N", help="counterfactual pairs (default 64)"
    )
    parser.add_argument(
        "--timesteps",
        nargs=2,
        type=int,
        action="append",
        metavar=("LO", "HI"),
        help="a swapped time-step range (repeatable; default 4 equal ranges)",
    )
    parser.add_argument(
        "--oracle-epochs", type=_positive_int, default=12, metavar="N", help="oracle epochs (default 12)"
    )
    parser.add_argument(
        "--reconstruction-images",
        type=_positive_int,
        default=64,
        metavar="N",
        help="images reconstructed (default 64)",
    )
    parser.add_argument("--no-counterfactual", action="store_true", help="skip the counterfactual score")
    parser.add_argument(
        "--no-attribute-loss", action="store_true", help="skip the DDPM attribute-loss time of every factor"
    )
    parser.add_argument("--no-reconstruction", action="store_true", help="skip the reconstruction metrics")
    parser.add_argument("--no-baselines", action="store_true", help="skip the random-encoder and raw-pixel baselines")
    parser.add_argument("--no-plots", action="store_true", help="write report.json only")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for report.json and the plots")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .data import SHAPES_DATASET_NAME, load_image_dataset
    from .evaluation import EvaluationConfig, ProbeConfig, evaluate_pipeline

    out = _output_dir(args.output_dir)
    device = _check_device(args.device)
    progress = not args.no_progress
    models = {"model": _load_pipeline(args.model, device, progress=progress)}
    if args.baseline is not None:
        models["baseline"] = _load_pipeline(args.baseline, device, "--baseline", progress=progress)
    if args.timesteps:
        for pipe in models.values():
            _check_ranges(pipe, args.timesteps, None)
    resolution = int(models["model"].encoder.config.sample_size)
    dataset = load_image_dataset(
        dataset_name=args.dataset, split=args.split, num_images=args.num_images, seed=args.seed, resolution=resolution
    )
    config = EvaluationConfig(
        seed=args.seed,
        probe=ProbeConfig(epochs=args.probe_epochs, seed=args.seed),
        random_baseline=not args.no_baselines,
        pixel_baseline=not args.no_baselines,
        counterfactual=not args.no_counterfactual,
        swap_ranges=[tuple(r) for r in args.timesteps] if args.timesteps else None,
        num_swap_pairs=args.swap_pairs,
        swap_batch_size=args.batch_size,
        oracle_epochs=args.oracle_epochs,
        attribute_loss=not args.no_attribute_loss,
        reconstruction=not args.no_reconstruction,
        num_reconstruction_images=args.reconstruction_images,
        num_inference_steps=args.steps,
        encode_batch_size=args.batch_size,
        plots=not args.no_plots,
    )
    info = {
        "name": args.dataset,
        "split": args.split,
        "seed": args.seed if args.dataset == SHAPES_DATASET_NAME else None,
    }
    info["models"] = {"model": args.model, "baseline": args.baseline}
    report = evaluate_pipeline(models, dataset, config, factors=args.factors, output_dir=out, dataset_info=info)
    for name in models:
        print(_evaluation_line(name, report["models"][name]))
    print(f"wrote {out / 'report.json'}" + (f" and {', '.join(report['plots'])}" if report.get("plots") else ""))
    return 0


def _evaluation_line(name: str, entry: dict) -> str:
    """One model's headline numbers, rounded as the README and the report print them (the JSON keeps full precision)."""
    line = f"{name}: mean probe accuracy {entry['probe']['mean_accuracy']:.3f}"
    spearman = (entry.get("alignment") or {}).get("spearman_timestep_vs_granularity")
    if entry.get("alignment"):
        line += ", alignment Spearman " + ("n/a" if spearman is None else f"{spearman:.2f}")
    return line


# --------------------------------------------------------------------------------------------------------- demo
def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    from .demo import DEFAULT_BASELINE, DEFAULT_FIXTURE, DEFAULT_MODEL

    parser = subparsers.add_parser(
        "demo",
        help="the demo (make demo): reconstructions, swaps, interpolation, edit, alignment, metrics report",
        description=(
            "Runs a trained DiTi pipeline (and optionally a PDAE baseline) on procedural shapes, offline, and writes "
            "reconstruction.png, swap_coarse.png, swap_fine.png, interpolation.png, edit.png, alignment_heatmap.png, "
            f"report.md and report.json. Without --model it uses {DEFAULT_MODEL} (and {DEFAULT_BASELINE}) if present, "
            f"else the interim mode on the official fixture ({DEFAULT_FIXTURE}): parity numbers and the same calls "
            "on a random-weight checkpoint."
        ),
    )
    parser.add_argument(
        "--model", default=None, metavar="DIR", help=f"a trained DiTi pipeline folder (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help=f"a PDAE pipeline folder reported side by side (default with the default model: {DEFAULT_BASELINE}, "
        "if present)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="no baseline, even the default one")
    parser.add_argument(
        "--official-fixture",
        default=None,
        metavar="DIR",
        help=f"interim mode: convert the official fixture checkpoint in DIR (e.g. {DEFAULT_FIXTURE}), check parity, "
        "run the pipeline on it",
    )
    parser.add_argument(
        "--images", nargs="+", default=None, metavar="PATH", help="images for the grids (default: procedural shapes)"
    )
    parser.add_argument("--output-dir", default="outputs/demo", metavar="DIR", help="default: outputs/demo")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="default 16")
    parser.add_argument(
        "--steps", type=_positive_int, default=None, metavar="N", help="DDIM steps of the grids (20; interim 5)"
    )
    parser.add_argument(
        "--eval-steps", type=_positive_int, default=10, metavar="N", help="DDIM steps of the evaluation (default 10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, probes and evaluation (default 0)")
    parser.add_argument(
        "--num-images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="labelled procedural images for the edit probe and the evaluation (1000; interim 200)",
    )
    parser.add_argument(
        "--num-examples", type=_positive_int, default=None, metavar="N", help="images in the grids (4; interim 3)"
    )
    parser.add_argument("--edit-factor", default="background", help="factor of the edit probe (default background)")
    parser.add_argument(
        "--edit-scales",
        nargs="+",
        type=_finite_float,
        default=None,
        metavar="S",
        help="edit step sizes (-1 -0.5 0 0.5 1; interim -1 0 1)",
    )
    parser.add_argument(
        "--swap-pairs", type=_positive_int, default=24, metavar="N", help="counterfactual pairs (default 24)"
    )
    parser.add_argument("--no-counterfactual", action="store_true", help="skip the counterfactual score")
    parser.add_argument("--zoom", type=_positive_int, default=None, metavar="N", help="grid cell upscaling")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: all cores but one, so a shared machine stays responsive)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(handler=_run_demo)


def _local_pipeline_dir(name: str, flag: str) -> str:
    path = Path(name).expanduser()
    if not path.is_dir():
        raise _UsageError(f"{flag} {name!r}: no such folder (the demo runs offline: give a local pipeline folder)")
    return str(path)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import (
        DEFAULT_BASELINE,
        DEFAULT_FIXTURE,
        DEFAULT_MODEL,
        INTERIM_NOTICE,
        DemoConfig,
        official_fixture_pipeline,
        resolve_default,
        run_demo,
    )

    if args.official_fixture is not None and (args.model is not None or args.baseline is not None):
        raise _UsageError("--official-fixture runs the interim demo on its own; drop --model / --baseline")
    device = _check_device(args.device)
    fixture = None
    if args.official_fixture is not None:
        fixture = Path(args.official_fixture)
        if not fixture.is_dir():
            raise _UsageError(f"--official-fixture {args.official_fixture!r}: no such folder")
    model = baseline = None
    if fixture is None:
        if args.model is not None:
            model = _local_pipeline_dir(args.model, "--model")
        elif resolve_default(DEFAULT_MODEL) is not None:
            model = str(resolve_default(DEFAULT_MODEL))
            if args.baseline is None and not args.no_baseline and resolve_default(DEFAULT_BASELINE) is not None:
                baseline = str(resolve_default(DEFAULT_BASELINE))
        else:
            fixture = resolve_default(DEFAULT_FIXTURE)
            if fixture is None:
                raise _UsageError(
                    f"no trained model at {DEFAULT_MODEL} and no official fixture at {DEFAULT_FIXTURE}; "
                    "pass --model DIR or --official-fixture DIR"
                )
            print(f"no trained model at {DEFAULT_MODEL}: running the interim demo on {fixture}")
        if args.baseline is not None and not args.no_baseline:
            if fixture is not None:
                raise _UsageError("--baseline needs a trained --model (the interim demo has no baseline)")
            baseline = _local_pipeline_dir(args.baseline, "--baseline")
    files = _image_files(args.images, "--images") if args.images else None
    interim = fixture is not None
    config = DemoConfig(
        output_dir=str(_output_dir(args.output_dir)),
        steps=args.steps or (5 if interim else 20),
        batch_size=args.batch_size,
        seed=args.seed,
        num_images=args.num_images or (200 if interim else 1000),
        num_examples=args.num_examples or (3 if interim else 4),
        edit_factor=args.edit_factor,
        edit_scales=args.edit_scales or ([-1.0, 0.0, 1.0] if interim else [-1.0, -0.5, 0.0, 0.5, 1.0]),
        num_swap_pairs=args.swap_pairs,
        eval_steps=args.eval_steps,
        evaluate_counterfactual=not args.no_counterfactual,
        zoom=args.zoom,
        interim=interim,
        model=str(fixture) if interim else model,
        baseline=baseline,
    )
    progress = not args.no_progress
    import torch

    # tiny models gain little from intra-op threads, and threads fighting another job for the cores slow the run
    # down several times (measured: 2 threads on 2 busy cores, 4x slower than 1)
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1)))
    start = time.perf_counter()
    parity = None
    if interim:
        print(INTERIM_NOTICE, flush=True)
        print(f"converting the official fixture checkpoint {fixture} and checking parity (10 DDIM steps) ...")
        pipe, parity = official_fixture_pipeline(fixture)
        pipe.to(device)
        baseline_pipe = None
    else:
        pipe = _load_pipeline(model, device, progress=False)
        baseline_pipe = None if baseline is None else _load_pipeline(baseline, device, "--baseline", progress=False)
    images = _read_images(files, "--images") if files else None
    report = run_demo(
        pipe,
        config,
        baseline=baseline_pipe,
        images=images,
        parity=parity,
        progress=progress,
        setup_seconds=time.perf_counter() - start,
    )
    if interim:
        print(INTERIM_NOTICE)
    failed = [name for name, entry in (parity or {}).items() if not entry["ok"]]
    if failed:
        print(f"{PROG}: parity check FAILED for {', '.join(failed)} (see report.md)", file=sys.stderr)
        return 1
    print(f"report: {Path(config.output_dir) / 'report.md'} ({report['seconds']['total']:.0f} s)")
    return 0


# ------------------------------------------------------------------------------------------------------- convert
def _add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official PDAE/DiTi checkpoint to diti_hf folders",
        description=(
            "Convert an official pre-trained DDPM (and optionally a DiTi/PDAE checkpoint trained on it) to "
            "OUTPUT_DIR/{unet,encoder,decoder,scheduler}, each loadable with from_pretrained."
        ),
    )
    parser.add_argument("--dpm-config", required=True, metavar="FILE", help="official DDPM YAML config")
    parser.add_argument(
        "--dpm-checkpoint",
        metavar="FILE",
        help="official DDPM checkpoint (.pt); if omitted, the frozen UNet stored in --diti-checkpoint is used",
    )
    parser.add_argument("--diti-config", metavar="FILE", help="official DiTi YAML config")
    parser.add_argument("--diti-checkpoint", metavar="FILE", help="official DiTi checkpoint (.pt)")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder to write the components to")
    parser.add_argument(
        "--image-size", type=int, metavar="N", help="image size, if no config has train_dataset_config.image_size"
    )
    parser.add_argument("--no-ema", action="store_true", help="prefer the raw weights to the EMA weights")
    parser.add_argument("--overwrite", action="store_true", help="replace existing component folders")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .conversion import convert_official, save_converted  # heavy imports only when used

    if (args.diti_config is None) != (args.diti_checkpoint is None):
        raise _UsageError("--diti-config and --diti-checkpoint must be given together")
    if args.dpm_checkpoint is None and args.diti_checkpoint is None:
        raise _UsageError("--dpm-checkpoint is required unless --diti-checkpoint is given")
    models = convert_official(
        args.dpm_config,
        args.dpm_checkpoint,
        args.diti_config,
        args.diti_checkpoint,
        prefer_ema=not args.no_ema,
        image_size=args.image_size,
    )
    written = save_converted(models, args.output_dir, overwrite=args.overwrite)
    for name, path in written.items():
        print(f"{name}: {path}")
    if models.encoder is None:
        # unet/ + scheduler/ alone is not a pipeline folder: with model_index.json it is the same layout that
        # train_ddpm.py writes, loadable with DDPMPipeline.from_pretrained (and usable as --pretrained_unet)
        from diffusers import DDPMPipeline

        DDPMPipeline(unet=models.unet, scheduler=models.scheduler).save_config(args.output_dir)
        index = Path(args.output_dir) / "model_index.json"
        print(f"pipeline: {index} (DDPMPipeline.from_pretrained loads the folder)")
    return 0


# ---------------------------------------------------------------------------------------------------- partition
def _add_partition_parser(subparsers: argparse._SubParsersAction) -> None:
    from .evaluation.loss_profile import PROFILE_SIGNALS

    parser = subparsers.add_parser(
        "partition",
        help="fit a staged partition to a frozen DDPM's loss profile (what train_diti.py --partition auto does)",
        description=(
            "Measure where a frozen DDPM's error lies along the time axis on a dataset (the DiTi-weighted ε error and "
            "the posterior-mean error per t) and fit a staged TimestepPartition to it: stages of equal error mass, "
            "dims per stage proportional to its mass. Prints the partition and the train_diti.py flags that give it; "
            "--output-dir also writes loss_profile.json and loss_profile.png (the profile with the chunk edges)."
        ),
    )
    parser.add_argument(
        "--pretrained-unet", "--pretrained_unet", dest="pretrained_unet", required=True, metavar="ID_OR_DIR",
        help="the frozen DDPM: a Hub id or a folder with a UNet2DModel (e.g. pretrained/ddpm-shapes32)",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", "--dataset-name", "--dataset_name", dest="dataset", default="diti-shapes",
        help="diti-shapes (default), diti-shapes-v2, a saved dataset folder or a Hub id",
    )  # fmt: skip
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument(
        "--latent-dim", "--latent_dim", dest="latent_dim", type=_positive_int, required=True, metavar="D",
        help="width d of z",
    )  # fmt: skip
    parser.add_argument(
        "--num-chunks", "--num_chunks", dest="num_chunks", type=_positive_int, required=True, metavar="K",
        help="number of chunks k",
    )  # fmt: skip
    parser.add_argument("--num-stages", type=_positive_int, default=4, metavar="N", help="stages aimed at (default 4)")
    parser.add_argument(
        "--signal", default="weighted_eps_error", choices=PROFILE_SIGNALS,
        help="the curve that sets where dims go (default: weighted_eps_error)",
    )  # fmt: skip
    parser.add_argument(
        "--num-images", type=_positive_int, default=256, metavar="N", help="images profiled (default 256)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, metavar="N", help="batch size (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and of diti-shapes data")
    parser.add_argument("--output-dir", default=None, metavar="DIR", help="write loss_profile.json/png here")
    parser.set_defaults(handler=_run_partition)


def _run_partition(args: argparse.Namespace) -> int:
    import json

    import torch

    from .data import ImageTransform, load_image_dataset, validation_batch
    from .evaluation.loss_profile import loss_profile, partition_from_profile, write_loss_profile
    from .models import load_frozen_ddpm
    from .schedule import DiffusionCoefficients

    device = _check_device(args.device)
    unet, scheduler_config = load_frozen_ddpm(args.pretrained_unet)
    unet.to(device)
    coefficients = DiffusionCoefficients.from_scheduler_config(scheduler_config)
    T = coefficients.num_train_timesteps
    resolution = int(unet.config.sample_size)
    dataset = load_image_dataset(
        dataset_name=args.dataset, split=args.split, num_images=args.num_images, seed=args.seed, resolution=resolution
    )
    images = validation_batch(
        dataset, ImageTransform(resolution, num_channels=unet.config.in_channels), args.num_images
    )

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return unet(x_t.to(device), t.to(device)).sample.float().cpu()

    profile = loss_profile(eps_fn, images, coefficients, batch_size=args.batch_size, seed=args.seed)
    partition = partition_from_profile(profile, args.latent_dim, args.num_chunks, args.num_stages, args.signal, T)
    print(json.dumps(partition.to_dict()))
    start = 0
    for end, dims in zip(partition.stages, partition.dims_per_stage):
        chunks = partition.chunks_for_timesteps(start, end)
        print(f"stage t in [{start}, {end}): chunks {chunks[0]}..{chunks[1] - 1}, {dims} dims")
        start = end
    stages = " ".join(map(str, partition.stages))
    dims = " ".join(map(str, partition.dims_per_stage))
    print(f"train_diti.py flags: --stages {stages} --dims_per_stage {dims}")
    if args.output_dir is not None:
        out = _output_dir(args.output_dir)
        files = write_loss_profile(profile, out, partition)
        print(f"wrote {', '.join(str(out / f) for f in files)}")
    return 0


# ---------------------------------------------------------------------------------------------------------- app
def _add_app_parser(subparsers: argparse._SubParsersAction) -> None:
    from .demo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "app",
        help="the browser app (Gradio): two images, a time-step range; swap, interpolate, edit, reconstruct",
        description=(
            f"Serve the DiTi browser app for a pipeline (default {DEFAULT_MODEL}): upload two images or draw two "
            "shapes, pick a time-step range on the partition, then swap, interpolate, edit (a probe trained on the "
            "spot or an uploaded .npy direction) or reconstruct. Needs the extra diti_hf[app] (gradio); runs offline "
            "(no analytics, no share link; set HF_HUB_OFFLINE=1 for a cached Hub model). Stop it with Ctrl-C."
        ),
    )
    _add_model_arguments(parser, steps=20, batch_size=16, model_required=False)
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=_positive_int, default=None, help="port (default: 7860 or the next free one)")
    parser.add_argument(
        "--report", default=None, metavar="DIR",
        help="an evaluation report folder whose alignment heatmap is shown (default with the default model: its report)",
    )  # fmt: skip
    parser.add_argument(
        "--probe-dataset", default="diti-shapes", metavar="NAME",
        help="labelled dataset of the edit probes: diti-shapes (default), diti-shapes-v2 or a saved dataset folder",
    )  # fmt: skip
    parser.add_argument("--probe-images", type=_positive_int, default=512, metavar="N", help="images per probe (512)")
    parser.set_defaults(handler=_run_app)  # --threads comes with the model flags


def _run_app(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    from .demo import DEFAULT_MODEL, resolve_default

    if importlib.util.find_spec("gradio") is None:
        raise _UsageError("the app needs gradio: pip install 'diti_hf[app]'")
    from .app import DEFAULT_REPORT, DiTiApp, build_app, find_alignment_image, launch_app

    device = _check_device(args.device)
    default = resolve_default(DEFAULT_MODEL)
    model = args.model or (None if default is None else str(default))
    if model is None:
        raise _UsageError(f"no model at {DEFAULT_MODEL}; pass --model FOLDER_OR_HUB_ID")
    if args.report is not None and not Path(args.report).is_dir():
        raise _UsageError(f"--report {args.report!r}: no such folder")
    report = args.report or (resolve_default(DEFAULT_REPORT) if args.model is None else None)
    pipe = _load_pipeline(model, device, progress=not args.no_progress)
    # as in the demo: threads fighting another job for the cores slow every edit down several times
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1)))
    app = DiTiApp(
        pipe,
        model_name=model,
        batch_size=args.batch_size,
        probe_dataset=args.probe_dataset,
        probe_images=args.probe_images,
        alignment_image=find_alignment_image(report, model if Path(model).is_dir() else None),
    )
    launch_app(build_app(app, steps=args.steps, seed=args.seed, device_label=device), host=args.host, port=args.port)
    return 0


# ---------------------------------------------------------------------------------------------------- registry
# In help order: the demo first, then the everyday commands, then the tools.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo_parser,
    _add_app_parser,
    _add_encode_parser,
    _add_reconstruct_parser,
    _add_swap_parser,
    _add_interpolate_parser,
    _add_edit_parser,
    _add_evaluate_parser,
    _add_partition_parser,
    _add_convert_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The `diti-hf` argument parser with every subcommand."""
    parser = _ArgumentParser(prog=PROG, description="DiTi: time-step-modular image representations, HF native.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.set_defaults(handler=None)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_parser in _SUBCOMMANDS:
        add_parser(subparsers)
    parser.set_defaults(command_names=sorted(subparsers.choices))
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Runs `diti-hf` with `argv` (default: `sys.argv[1:]`).

    Returns:
        `int`: The exit code: 0 on success, 2 for a usage or input error (one line on stderr, no traceback), 1 for an
        unexpected error (one line, or its traceback with `--debug`).
    """
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.handler is None:
            names = ", ".join(args.command_names)
            raise _UsageError(f"choose a command ({names}); see `{PROG} --help`")
        if getattr(args, "seed", None) is not None:
            _seed(args.seed)
        reuse_freed_memory()  # CPU inference: no page faults for every new activation tensor (diti_hf.cpu_memory)
        if hasattr(args, "threads"):
            _set_threads(args.threads)
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            # the commands say these in terms of their own flags (_check_ranges, _read_images)
            warnings.filterwarnings("ignore", message=".*acts on whole chunks")
            warnings.filterwarnings("ignore", message=r"`images` of size .* are resized")
            return args.handler(args)
    except SystemExit as exit_:  # --help / --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except (_UsageError, ValueError, TypeError, OSError, FolderInUseError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except MemoryError as error:
        print(f"{PROG}: error: out of memory ({_one_line(error)}); try a smaller --batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line unless asked for the traceback
        if getattr(args, "debug", False):
            raise
        print(
            f"{PROG}: error: unexpected {type(error).__name__}: {_one_line(error)[:500]} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

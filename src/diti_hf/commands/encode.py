"""`diti-hf encode`: images or a dataset → z, one file or resumable shards (`diti_hf.features`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "encode",
        description=(
            "Encode image files or a 🤗 dataset into z with the model's encoder. Writes one file (--output) or, for "
            "large inputs, shards written atomically and a merged file (--output-dir; resumable with --resume). "
            "Metadata (latent_dim, num_chunks, chunk_end_dims, chunk time-step ranges, model, image ids/paths) goes "
            "in a JSON sidecar (.npy) or in the parquet columns and schema metadata."
        ),
    )
    common.add_model_arguments(parser, steps=None, batch_size=64)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    source.add_argument(
        "--dataset", metavar="NAME", help="a 🤗 Hub dataset id, a saved dataset folder, or diti-shapes (procedural)"
    )
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--image-column", default=None, help="dataset image column (default: image, or the only one)")
    parser.add_argument(
        "--num-images",
        type=common.positive_int,
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
        "--shard-size", type=common.positive_int, default=4096, metavar="N", help="images per shard (default 4096)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted --output-dir extraction")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file (an --output-dir run: --resume)"
    )
    parser.set_defaults(handler=run)


def _check_arguments(args: argparse.Namespace) -> list[Path] | None:
    """Refuses contradictory flags before the model loads; returns the image files of `--images`."""
    if args.output is not None:
        suffix = Path(args.output).suffix.lower()
        if suffix not in (".npy", ".parquet"):
            raise common.UsageError(
                f"--output {args.output!r}: unknown extension {suffix or '(none)'!r}; use .npy or .parquet"
            )
        if args.resume:
            raise common.UsageError("--resume needs --output-dir (a single --output file is written at once)")
        output = Path(args.output).expanduser()
        written = [output] + ([output.with_suffix(".json")] if suffix == ".npy" else [])  # write_features' files
        common.check_new_files(written, "--output", args.overwrite)
    else:
        if args.overwrite:
            raise common.UsageError(
                "--overwrite applies to --output; an --output-dir extraction is continued with --resume (or give "
                "another folder)"
            )
        common.output_dir(args.output_dir)
    if args.images is None:
        return None
    if args.split != "train" or args.image_column is not None:
        raise common.UsageError("--split and --image-column apply to --dataset, not --images")
    return common.image_files(args.images, "--images")[: args.num_images]


def _image_source(args: argparse.Namespace, files: list[Path], metadata: dict) -> tuple[list, list, Path | None]:
    """The files of `--images` with their ids, and the folder they must lie in (`None` unless one folder is given)."""
    from ..features import printable_name

    base = Path(args.images[0]).expanduser()
    if len(args.images) == 1 and base.is_dir():
        # ids by the name inside the folder; a file that resolves outside it (a symbolic link) is a bad image
        root, names = base.resolve(), [p.relative_to(base) for p in files]
        images = [base.absolute() / name for name in names]
        metadata["source"] = {"kind": "images", "root": printable_name(str(root)), "num_files": len(files)}
    else:  # files named one by one: ids by the path given
        root, names, images = None, files, [p.absolute() for p in files]
        inputs = [printable_name(name) for name in args.images]
        metadata["source"] = {"kind": "images", "inputs": inputs, "num_files": len(files)}
    ids = [printable_name(name.as_posix()) for name in names]
    return images, ids, root


def _dataset_source(args: argparse.Namespace, pipe: Any, metadata: dict) -> tuple[Any, str]:
    """The dataset of `--dataset` at the model's resolution, and its image column."""
    from ..data import SHAPES_DATASET_NAME, load_image_dataset, resolve_image_column

    images = load_image_dataset(
        dataset_name=args.dataset,
        split=args.split,
        num_images=args.num_images,
        seed=args.seed,
        resolution=int(pipe.encoder.config.sample_size),
    )
    column = resolve_image_column(images, args.image_column)
    metadata["source"] = {
        "kind": "dataset",
        "name": args.dataset,
        "split": args.split,
        "image_column": column,
        "num_images": len(images),
        "seed": args.seed if args.dataset == SHAPES_DATASET_NAME else None,
    }
    return images, column


def run(args: argparse.Namespace) -> int:
    from ..features import encode_images, extract_features, feature_metadata, write_features

    files = _check_arguments(args)
    pipe = common.open_pipeline(args)
    metadata = feature_metadata(pipe, args.model)
    if files is not None:
        common.warn_if_resized(pipe, files, [common.image_size(path) for path in files], "--images")
        images, ids, root = _image_source(args, files, metadata)
        column = None
    else:
        images, column = _dataset_source(args, pipe, metadata)
        ids = root = None
    if args.output is not None:
        features, kept_ids, paths, skipped = encode_images(
            pipe, images, args.batch_size, column, ids, args.skip_bad_images, progress=not args.no_progress, root=root
        )
        metadata["skipped"] = skipped
        has_paths = bool(paths) and all(p is not None for p in paths)
        written = write_features(args.output, features, kept_ids, metadata, paths if has_paths else None)
        print(f"encoded {common.count(features.shape[0], 'image')} → {', '.join(str(p) for p in written)}")
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
            f"encoded {common.count(result.num_features, 'image')} in {common.count(result.num_shards, 'shard')}{resumed} → {result.output}"
        )
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): " + ", ".join(str(s["path"] or s["id"]) for s in skipped))
    return 0

"""`diti-hf edit`: images moved along a linear classifier direction in z; edit.png."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "edit",
        description=(
            "Edit images along a direction w of z (e.g. a linear probe's weight for one attribute): "
            "z' = z + s·√d·σ⊙w/‖w‖, generated from each image's own x_T. Writes OUTPUT_DIR/edit.png: one row per "
            "image, the input then one column per scale."
        ),
    )
    common.add_model_arguments(parser)
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    parser.add_argument("--direction", required=True, metavar="FILE.npy", help="w: a (latent_dim,) array")
    common.add_numbers_argument(parser, "--scales", [-1.0, -0.5, 0.0, 0.5, 1.0], "S", "step sizes s")
    parser.add_argument(
        "--top-k", type=common.positive_int, default=None, metavar="K", help="keep the K largest |w| dims"
    )
    parser.add_argument(
        "--z-std", default=None, metavar="FILE.npy", help="per-dim std σ of z (default: the encoder's, else ones)"
    )
    common.add_grid_arguments(parser)
    parser.set_defaults(handler=run)


def _load_vector(path: str, flag: str, dim: int):
    """The `(dim,)` array in a .npy file (header checked before anything is allocated) as a float32 tensor; whether
    its values make a usable direction or std is the pipeline's check."""
    import numpy as np
    import torch

    from ..safe_io import read_vector

    try:
        array = read_vector(path, f"{flag} {path!r}", dim)
    except (OSError, ValueError) as error:
        raise common.UsageError(
            f"{common.one_line(error).rstrip('.')}; expected {dim} numbers (the model's latent_dim)"
        ) from None
    return torch.from_numpy(array.astype(np.float32))


def run(args: argparse.Namespace) -> int:
    from ..visualization import variant_rows

    files = common.image_files(args.images, "--images")
    for flag, path in (("--direction", args.direction), ("--z-std", args.z_std)):
        if path is not None and not Path(path).is_file():
            raise common.UsageError(f"{flag} {path!r}: no such file")
    (path,) = common.grid_paths(args, ["edit.png"])
    pipe = common.open_pipeline(args)
    dim = int(pipe.partition.latent_dim)
    direction = _load_vector(args.direction, "--direction", dim)
    z_std = None if args.z_std is None else _load_vector(args.z_std, "--z-std", dim)
    images = common.read_for_model(pipe, files, "--images")
    edited = []
    # the pipeline checks the values (finite, non-zero, top_k <= d) before it inverts anything
    flags = {
        "direction": f"--direction {args.direction!r}",
        "z_std": f"--z-std {args.z_std!r}",
        "scales": "--scales",
        "top_k": f"--top-k {args.top_k}",
    }
    with common.library_errors(flags):
        for batch in common.batches(images, args.batch_size):
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
    rows = variant_rows(common.shown(pipe, images), edited)
    dims = f"its {args.top_k} largest dims" if args.top_k is not None else "all dims"
    caption = (
        f"each row: the input | scale s = {', '.join(f'{s:g}' for s in args.scales)} along --direction "
        f"({dims}; s = 0 is the reconstruction; {args.steps} DDIM steps)"
    )
    common.save_grid(rows, path, common.grid_zoom(args, rows[0][0].width), caption)
    return 0

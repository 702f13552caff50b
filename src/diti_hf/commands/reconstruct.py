"""`diti-hf reconstruct`: invert and regenerate images; reconstruction.png."""

from __future__ import annotations

import argparse

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "reconstruct",
        description="Encode, invert with masked DDIM and regenerate images. Writes OUTPUT_DIR/reconstruction.png: "
        "the inputs (as the model sees them) in the first row, their reconstructions below.",
    )
    common.add_model_arguments(parser)
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    common.add_grid_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    files = common.image_files(args.images, "--images")
    (path,) = common.grid_paths(args, ["reconstruction.png"])
    pipe = common.open_pipeline(args)
    images = common.read_for_model(pipe, files, "--images")
    recon = []
    for batch in common.batches(images, args.batch_size):
        recon += pipe.reconstruct(batch, num_inference_steps=args.steps, output_type="pil").images
    caption = f"top: the inputs as the model sees them; bottom: their reconstructions ({args.steps} DDIM steps)"
    common.save_grid(
        [common.shown(pipe, images), recon],
        path,
        common.grid_zoom(args, recon[0].width),
        caption,
    )
    return 0

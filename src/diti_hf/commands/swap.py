"""`diti-hf swap`: counterfactuals, the chunks of a time-step range taken from targets into sources; swap_*.png."""

from __future__ import annotations

import argparse

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "swap",
        description=(
            "For every source × target pair and every range, generate the source with the chunks of z tied to the "
            "range taken from the target. Writes OUTPUT_DIR/swap_<range>.png per range: targets in the first row, "
            "sources in the first column."
        ),
    )
    common.add_model_arguments(parser)
    parser.add_argument("--source", nargs="+", required=True, metavar="PATH", help="source image files or folders")
    parser.add_argument("--target", nargs="+", required=True, metavar="PATH", help="target image files or folders")
    common.add_range_arguments(parser, repeat=True, what="swap")
    common.add_grid_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..visualization import swap_caption, swap_grid_rows

    source_files = common.image_files(args.source, "--source")
    target_files = common.image_files(args.target, "--target")
    common.output_dir(args.output_dir)
    pipe = common.open_pipeline(args)
    ranges = common.check_ranges(pipe, args.timesteps, args.chunks)
    paths = common.grid_paths(args, [f"swap_{common.range_label(kind, bounds)}.png" for kind, bounds in ranges])
    sources = common.read_for_model(pipe, source_files, "--source")
    targets = common.read_for_model(pipe, target_files, "--target")
    shown_s, shown_t = common.shown(pipe, sources), common.shown(pipe, targets)
    zoom = common.grid_zoom(args, shown_s[0].width)
    # check_ranges lists the time-step ranges first, the order in which pipe.swap generates them
    swapped = pipe.swap(
        sources,
        targets,
        timesteps=[bounds for kind, bounds in ranges if kind == "timesteps"] or None,
        chunks=[bounds for kind, bounds in ranges if kind == "chunks"] or None,
        num_inference_steps=args.steps,
        batch_size=args.batch_size,
        all_pairs=True,
    ).images
    for r, ((kind, bounds), path) in enumerate(zip(ranges, paths)):
        what = common.range_text(pipe, kind, bounds)
        caption = f"{swap_caption(f'swap of {what}', what)} ({args.steps} DDIM steps)"
        rows = swap_grid_rows(shown_s, shown_t, swapped, range_index=r, num_ranges=len(ranges))
        common.save_grid(rows, path, zoom, caption)
    return 0

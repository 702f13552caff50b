"""`diti-hf interpolate`: the chunks of one time-step range moved from source to target; interpolation.png."""

from __future__ import annotations

import argparse

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "interpolate",
        description=(
            "For each (source, target) pair, lerp the dims of one time-step range of z from the source's to the "
            "target's (the rest stays the source's) and generate from the source's x_T (with --slerp, from the "
            "slerp of both x_T). Writes OUTPUT_DIR/interpolation.png: one row per pair, source | α… | target."
        ),
    )
    common.add_model_arguments(parser)
    parser.add_argument("--source", nargs="+", required=True, metavar="PATH", help="image A files or folders")
    parser.add_argument(
        "--target", nargs="+", required=True, metavar="PATH", help="image B files or folders (as many)"
    )
    common.add_numbers_argument(
        parser, "--alphas", [0.0, 0.25, 0.5, 0.75, 1.0], "A", "interpolation weights, 0 = source"
    )
    common.add_range_arguments(parser, repeat=False, what="interpolate (default: all of z)")
    parser.add_argument("--slerp", action="store_true", help="also interpolate x_T spherically (official figures)")
    common.add_grid_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..visualization import variant_rows

    source_files = common.image_files(args.source, "--source")
    target_files = common.image_files(args.target, "--target")
    if len(source_files) != len(target_files):
        raise common.UsageError(
            f"--source has {len(source_files)} images but --target has {len(target_files)}; give one target per source"
        )
    (path,) = common.grid_paths(args, ["interpolation.png"])
    pipe = common.open_pipeline(args)
    timesteps, chunks = [args.timesteps] if args.timesteps else None, [args.chunks] if args.chunks else None
    ranges = common.check_ranges(pipe, timesteps, chunks, required=False, single=True)
    kwargs = {ranges[0][0]: ranges[0][1]} if ranges else {}
    sources = common.read_for_model(pipe, source_files, "--source")
    targets = common.read_for_model(pipe, target_files, "--target")
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
    shown_s, shown_t = common.shown(pipe, sources), common.shown(pipe, targets)
    what = f"the z-dims of {common.range_text(pipe, *ranges[0])}" if ranges else "all of z"
    alphas = ", ".join(f"{a:g}" for a in args.alphas)
    caption = (
        f"each row: source | alpha = {alphas} | target; {what} moved from the source's value to the target's, "
        f"generated from {'the slerp of both x_T' if args.slerp else 'the source x_T'} ({args.steps} DDIM steps)"
    )
    rows = variant_rows(shown_s, images, after=shown_t)
    common.save_grid(rows, path, common.grid_zoom(args, shown_s[0].width), caption)
    return 0

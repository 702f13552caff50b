"""`diti-hf convert`: an official PDAE/DiTi checkpoint → diti_hf component folders (`diti_hf.conversion`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "convert",
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
    common.add_runtime_arguments(parser, progress=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..conversion import convert_official, save_converted  # heavy imports only when used

    if (args.diti_config is None) != (args.diti_checkpoint is None):
        raise common.UsageError("--diti-config and --diti-checkpoint must be given together")
    if args.dpm_checkpoint is None and args.diti_checkpoint is None:
        raise common.UsageError("--dpm-checkpoint is required unless --diti-checkpoint is given")
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

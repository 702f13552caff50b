"""`diti-hf export`: the pipeline folder of any complete checkpoint of a `train_diti.py` run (`diti_hf.training.export`)."""

from __future__ import annotations

import argparse

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "export",
        description=(
            "Turn a checkpoint of an examples/train_diti.py run into a DiTiPipeline folder with the EMA weights and a "
            "model card (the run's training command, the step, the images seen). Needs no dataset and no training "
            "flags: the run recorded what it needs at its start. The checkpoint's content hashes are verified first."
        ),
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="RUN_DIR[/checkpoint-N]",
        help="a checkpoint folder, or a run folder for its newest complete checkpoint",
    )  # fmt: skip
    parser.add_argument(
        "--output", "--output-dir", dest="output", default=None, metavar="DIR",
        help="where to write the pipeline (default: RUN_DIR/pipeline-N)",
    )  # fmt: skip
    common.add_runtime_arguments(parser, progress=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..training.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.output)
    print(f"wrote {out} (load it with DiTiPipeline.from_pretrained({str(out)!r}))")
    return 0

"""`diti-hf app`: the Gradio browser app (`diti_hf.app`) for a pipeline, offline."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="the browser app (Gradio): two images, a time-step range; swap, interpolate, edit, reconstruct",
        description=(
            f"Serve the DiTi browser app for a pipeline (default {common.DEFAULT_MODEL}): upload two images or draw "
            "two shapes, pick a time-step range on the partition, then swap, interpolate, edit (a probe trained on "
            "the spot or an uploaded .npy direction) or reconstruct. Needs the extra diti_hf[app] (gradio); runs "
            "offline (no analytics, no share link; set HF_HUB_OFFLINE=1 for a cached Hub model). Stop it with Ctrl-C."
        ),
    )
    # the model flags, with --threads
    common.add_model_arguments(parser, steps=common.DEFAULT_APP_STEPS, batch_size=16, model_required=False)
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument(
        "--port", type=common.positive_int, default=None, help="port (default: 7860 or the next free one)"
    )
    parser.add_argument(
        "--report", default=None, metavar="DIR",
        help="an evaluation report folder whose alignment heatmap is shown (default with the default model: its report)",
    )  # fmt: skip
    parser.add_argument(
        "--probe-dataset", default="diti-shapes", metavar="NAME",
        help="labelled dataset of the edit probes: diti-shapes (default), diti-shapes-v2 or a saved dataset folder",
    )  # fmt: skip
    parser.add_argument(
        "--probe-images", type=common.positive_int, default=512, metavar="N", help="images per probe (512)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import resolve_default

    if importlib.util.find_spec("gradio") is None:
        raise common.UsageError("the app needs gradio: pip install 'diti_hf[app]'")
    from ..app import DEFAULT_REPORT, SHIPPED_FINDINGS, DiTiApp, build_app, find_alignment_image, launch_app

    device = common.check_device(args.device)
    default = resolve_default(common.DEFAULT_MODEL)
    model = args.model or (None if default is None else str(default))
    if model is None:
        raise common.UsageError(f"no model at {common.DEFAULT_MODEL}; pass --model FOLDER_OR_HUB_ID")
    if args.report is not None and not Path(args.report).is_dir():
        raise common.UsageError(f"--report {args.report!r}: no such folder")
    report = args.report or (resolve_default(DEFAULT_REPORT) if args.model is None else None)
    pipe = common.load_pipeline(model, device, progress=not args.no_progress)
    app = DiTiApp(
        pipe,
        model_name=model,
        batch_size=args.batch_size,
        probe_dataset=args.probe_dataset,
        probe_images=args.probe_images,
        alignment_image=find_alignment_image(report, model if Path(model).is_dir() else None),
        findings=SHIPPED_FINDINGS if args.model is None else None,  # measurements of another model are unknown here
    )
    launch_app(build_app(app, steps=args.steps, seed=args.seed, device_label=device), host=args.host, port=args.port)
    return 0

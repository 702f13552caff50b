"""`diti-hf demo` (`make demo`): the shipped models end to end, offline (`diti_hf.demo`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import _common as common


# One flat list of flags, in the order `--help` prints them: splitting it would only scatter that order.
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ._common import DEFAULT_BASELINE, DEFAULT_FIXTURE, DEFAULT_MODEL

    parser = common.add_command_parser(
        subparsers,
        "demo",
        description=(
            "Runs a trained DiTi pipeline (and optionally a PDAE baseline) on procedural shapes, offline, and writes "
            "reconstruction.png, swap_coarse.png, swap_fine.png, interpolation.png, edit.png, alignment_heatmap.png, "
            "report.md and report.json with the headline metrics (the full report: diti-hf evaluate). Without --model "
            f"it uses {DEFAULT_MODEL} (and {DEFAULT_BASELINE}) if present in the working directory or the source "
            f"checkout, else the interim mode on the official fixture ({DEFAULT_FIXTURE}): parity numbers and the "
            "same calls on a random-weight checkpoint."
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
    parser.add_argument("--batch-size", type=common.positive_int, default=16, metavar="N", help="default 16")
    parser.add_argument(
        "--steps", type=common.positive_int, default=None, metavar="N", help="DDIM steps of the grids (20; interim 5)"
    )
    parser.add_argument(
        "--eval-steps",
        type=common.positive_int,
        default=10,
        metavar="N",
        help="DDIM steps of the --counterfactual swaps (default 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, probes and evaluation (default 0)")
    parser.add_argument(
        "--num-images",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="labelled procedural images for the edit probe and the evaluation (1000; interim 200)",
    )
    parser.add_argument(
        "--num-examples",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="images in the grids (4; interim 3)",
    )
    parser.add_argument("--edit-factor", default="background", help="factor of the edit probe (default background)")
    parser.add_argument(
        "--edit-scales",
        nargs="+",
        type=common.finite_float,
        default=None,
        metavar="S",
        help="edit step sizes (-1 -0.5 0 0.5 1; interim -1 0 1)",
    )
    parser.add_argument(
        "--swap-pairs", type=common.positive_int, default=24, metavar="N", help="--counterfactual pairs (default 24)"
    )
    parser.add_argument(
        "--counterfactual",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train the oracle and run the counterfactual swap score and the frozen DDPM's attribute-loss times "
        "(off by default: about 20 s more on 2 CPU cores; `diti-hf evaluate` runs them)",
    )
    parser.add_argument("--zoom", type=common.positive_int, default=None, metavar="N", help="grid cell upscaling")
    common.add_runtime_arguments(parser)
    parser.set_defaults(handler=run)


def _local_pipeline_dir(name: str, flag: str) -> str:
    path = Path(name).expanduser()
    if not path.is_dir():
        raise common.UsageError(
            f"{flag} {name!r}: no such folder (the demo runs offline: give a local pipeline folder)"
        )
    return str(path)


def _default_fixture() -> Path:
    """The official fixture of the source checkout, for the interim demo; a one-line error naming the flags to pass
    where there is none (e.g. after a wheel install, which ships neither `pretrained/` nor `tests/`)."""
    from .. import demo

    fixture = demo.resolve_default(demo.DEFAULT_FIXTURE)
    if fixture is None:
        where = " and ".join(str(root) for root in demo.search_roots())
        raise common.UsageError(
            f"no trained model at {demo.DEFAULT_MODEL} and no official fixture at {demo.DEFAULT_FIXTURE} (looked in "
            f"{where}); pass --model DIR (a trained DiTi pipeline folder) or --official-fixture DIR"
        )
    print(f"no trained model at {demo.DEFAULT_MODEL}: running the interim demo on {fixture}")
    return fixture


def _choose_models(args: argparse.Namespace) -> tuple[str | None, str | None, Path | None]:
    """`(model, baseline, fixture)`: the pipeline folders the flags name, else the shipped ones, else the fixture."""
    from .. import demo

    if args.official_fixture is not None:
        if args.model is not None or args.baseline is not None:
            raise common.UsageError("--official-fixture runs the interim demo on its own; drop --model / --baseline")
        if not Path(args.official_fixture).is_dir():
            raise common.UsageError(f"--official-fixture {args.official_fixture!r}: no such folder")
        return None, None, Path(args.official_fixture)
    model = baseline = fixture = None
    if args.model is not None:
        model = _local_pipeline_dir(args.model, "--model")
    elif demo.resolve_default(demo.DEFAULT_MODEL) is not None:
        model = str(demo.resolve_default(demo.DEFAULT_MODEL))
        default_baseline = demo.resolve_default(demo.DEFAULT_BASELINE)
        if args.baseline is None and not args.no_baseline and default_baseline is not None:
            baseline = str(default_baseline)
    else:
        fixture = _default_fixture()
    if args.baseline is not None and not args.no_baseline:
        if fixture is not None:
            raise common.UsageError("--baseline needs a trained --model (the interim demo has no baseline)")
        baseline = _local_pipeline_dir(args.baseline, "--baseline")
    return model, baseline, fixture


def _demo_config(args: argparse.Namespace, model: str | None, baseline: str | None, fixture: Path | None) -> Any:
    """The `DemoConfig` of the flags; the interim run on random weights is smaller by default."""
    from ..demo import DemoConfig

    interim = fixture is not None
    return DemoConfig(
        output_dir=str(common.output_dir(args.output_dir)),
        steps=args.steps or (5 if interim else 20),
        batch_size=args.batch_size,
        seed=args.seed,
        num_images=args.num_images or (200 if interim else 1000),
        num_examples=args.num_examples or (3 if interim else 4),
        edit_factor=args.edit_factor,
        edit_scales=args.edit_scales or ([-1.0, 0.0, 1.0] if interim else [-1.0, -0.5, 0.0, 0.5, 1.0]),
        num_swap_pairs=args.swap_pairs,
        eval_steps=args.eval_steps,
        evaluate_counterfactual=args.counterfactual,
        zoom=args.zoom,
        interim=interim,
        model=str(fixture) if interim else model,
        baseline=baseline,
    )


def run(args: argparse.Namespace) -> int:
    from .. import demo

    model, baseline, fixture = _choose_models(args)
    device = common.check_device(args.device)
    files = common.image_files(args.images, "--images") if args.images else None
    config = _demo_config(args, model, baseline, fixture)
    start = time.perf_counter()
    parity = baseline_pipe = None
    if config.interim:
        print(demo.INTERIM_NOTICE, flush=True)
        print(f"converting the official fixture checkpoint {fixture} and checking parity (10 DDIM steps) ...")
        pipe, parity = demo.official_fixture_pipeline(fixture)
        pipe.to(device)
    else:
        pipe = common.load_pipeline(model, device, progress=False)
        baseline_pipe = (
            None if baseline is None else common.load_pipeline(baseline, device, "--baseline", progress=False)
        )
    images = common.read_images(files, "--images") if files else None
    report = demo.run_demo(
        pipe,
        config,
        baseline=baseline_pipe,
        images=images,
        parity=parity,
        progress=not args.no_progress,
        setup_seconds=time.perf_counter() - start,
    )
    if config.interim:
        print(demo.INTERIM_NOTICE)
    failed = [name for name, entry in (parity or {}).items() if not entry["ok"]]
    if failed:
        print(f"{common.PROG}: parity check FAILED for {', '.join(failed)} (see report.md)", file=sys.stderr)
        return 1
    print(f"report: {Path(config.output_dir) / 'report.md'} ({report['seconds']['total']:.0f} s)")
    return 0

"""`diti-hf evaluate`: probes, time-step alignment, counterfactual score and reconstruction (`diti_hf.evaluation`)."""

from __future__ import annotations

import argparse

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="probes, time-step alignment, counterfactual score, reconstruction → report.json + plots",
        description=(
            "Run diti_hf.evaluation on a dataset with known factors (ClassLabel columns; default the procedural "
            "diti-shapes at the model's resolution): linear probes, time-step alignment, counterfactual flip rates and "
            "reconstruction, with random-encoder and raw-pixel baselines. Writes OUTPUT_DIR/report.json and plots."
        ),
    )
    common.add_model_arguments(parser, steps=20, batch_size=16)
    parser.add_argument("--baseline", default=None, metavar="ID_OR_DIR", help="a second pipeline (e.g. PDAE)")
    parser.add_argument(
        "--dataset", default="diti-shapes", help="diti-shapes (default), a saved dataset folder or a Hub id"
    )
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument(
        "--num-images", type=common.positive_int, default=2000, metavar="N", help="images used (default 2000)"
    )
    parser.add_argument("--factors", nargs="+", default=None, help="factor columns (default: every ClassLabel column)")
    parser.add_argument(
        "--probe-epochs", type=common.positive_int, default=15, metavar="N", help="probe epochs (default 15)"
    )
    parser.add_argument(
        "--swap-pairs", type=common.positive_int, default=64, metavar="N", help="counterfactual pairs (default 64)"
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
        "--oracle-epochs", type=common.positive_int, default=12, metavar="N", help="oracle epochs (default 12)"
    )
    parser.add_argument(
        "--reconstruction-images",
        type=common.positive_int,
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
    parser.set_defaults(handler=run)


def _config(args: argparse.Namespace):
    """The `EvaluationConfig` the flags ask for."""
    from ..evaluation import EvaluationConfig, ProbeConfig

    return EvaluationConfig(
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


def run(args: argparse.Namespace) -> int:
    from ..data import SHAPES_DATASET_NAME, load_image_dataset
    from ..evaluation import evaluate_pipeline

    out = common.output_dir(args.output_dir)
    device = common.check_device(args.device)
    progress = not args.no_progress
    models = {"model": common.load_pipeline(args.model, device, progress=progress)}
    if args.baseline is not None:
        models["baseline"] = common.load_pipeline(args.baseline, device, "--baseline", progress=progress)
    if args.timesteps:
        for pipe in models.values():
            common.check_ranges(pipe, args.timesteps, None)
    resolution = int(models["model"].encoder.config.sample_size)
    dataset = load_image_dataset(
        dataset_name=args.dataset, split=args.split, num_images=args.num_images, seed=args.seed, resolution=resolution
    )
    info = {
        "name": args.dataset,
        "split": args.split,
        "seed": args.seed if args.dataset == SHAPES_DATASET_NAME else None,
        "models": {"model": args.model, "baseline": args.baseline},
    }
    report = evaluate_pipeline(models, dataset, _config(args), factors=args.factors, output_dir=out, dataset_info=info)
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

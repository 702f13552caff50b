"""`diti-hf evaluate`: probes, time-step alignment, counterfactual score and reconstruction — the run of
`examples/evaluate.py` ([`~diti_hf.evaluation.run_benchmark`]), with the flags spelt with dashes."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator, Mapping

from ..evaluation.names import PROTOCOLS, SWAP_PROTOCOLS
from . import _common as common

# the diagnostics' switches: `--no-NAME` turns EvaluationConfig's NAME off (`--no-baselines`: both baselines)
_SKIPS = {
    "counterfactual": "the counterfactual score",
    "attribute_loss": "the DDPM attribute-loss time of every factor",
    "reconstruction": "the reconstruction metrics",
    "loss_profile": "the frozen DDPM's loss profile and the partition fitted to it",
    "regeneration": "the regeneration keep-rates",
    "sample_validity": "reading the frozen DDPM's samples with the oracle",
    "baselines": "the random-encoder and raw-pixel baselines",
    "random_baseline": "the random-encoder baseline",
    "pixel_baseline": "the raw-pixel baseline",
    "disentanglement": "the DCI / MIG / SAP / FactorVAE metrics",
    "plots": "the plots (write report.json only)",
}
# the diagnostics' sizes: flag → (run_benchmark / EvaluationConfig name, what it is); unset, the library's default
# (the per-image ones: at most the test split, the whole dataset for --disentanglement-images; see DEFAULT_SIZES)
_SIZES = {
    "--num-swap-ranges": ("num_swap_ranges", "equal ranges swapped when no --timesteps is given (default 4)"),
    "--max-alignment-groups": ("max_alignment_groups", "chunk groups probed for the alignment (default 64)"),
    "--attribute-loss-images": (
        "num_attribute_loss_images",
        "test images of the attribute-loss times (default 128, at most the test images)",
    ),
    "--regeneration-images": (
        "num_regeneration_images",
        "images regenerated at each noise level (default 48, at most the test images)",
    ),
    "--validity-samples": (
        "num_validity_samples",
        "DDPM samples read by the oracle (default 64, at most the test images)",
    ),
    "--sample-steps": ("num_sample_steps", "DDIM steps of those samples (default 50)"),
    "--probe-batch-size": ("probe_batch_size", "probe mini-batch size (default 128)"),
    "--max-samples": ("max_samples", "celeba / lfw: rows per split (default: all)"),
    "--resolution": ("resolution", "side of the generated images (default: the model's)"),
    "--disentanglement-images": (
        "disentanglement_images",
        "images of the DCI / MIG / SAP / FactorVAE metrics (default 1000, at most --num-images)",
    ),
}
# the library's names (in its error messages) that the flags spell otherwise
_FLAG_OF = {
    "swap_ranges": "--timesteps",
    "num_inference_steps": "--steps",
    "num_swap_pairs": "--swap-pairs",
    "num_reconstruction_images": "--reconstruction-images",
}


# One flat list of flags, in the order `--help` prints them: splitting it would only scatter that order.
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="probes, time-step alignment, counterfactual score, reconstruction → report.json + plots",
        description=(
            "Run diti_hf.evaluation on a dataset with known factors (ClassLabel columns; default the procedural "
            "diti-shapes at the model's resolution): linear probes, time-step alignment, counterfactual flip rates, "
            "reconstruction and the frozen DDPM's diagnostics, with random-encoder and raw-pixel baselines; or the "
            "CelebA / LFW attribute protocols (--protocol). Writes OUTPUT_DIR/report.json and plots. The same run as "
            "examples/evaluate.py (diti_hf.evaluation.run_benchmark)."
        ),
    )
    common.add_model_arguments(parser, steps=20, batch_size=16)
    parser.add_argument(
        "--baseline", default=None, metavar="ID_OR_DIR", help="a second pipeline (e.g. PDAE) or a DDPMPipeline folder"
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="shapes", help="default: shapes")
    parser.add_argument(
        "--dataset",
        default=None,
        help="shapes: diti-shapes (default) or diti-shapes-v2 (generated), or a saved dataset folder or Hub id with "
        "ClassLabel or numeric factor columns (e.g. Shapes3D, dSprites); celeba / lfw (required): the Hub id or folder with the attributes",
    )
    parser.add_argument("--split", default="train", help="split of a loaded --dataset (default: train)")
    parser.add_argument(
        "--num-images",
        type=common.positive_int,
        default=2000,
        metavar="N",
        help="images used (default 2000; split 60/20/20 into train/val/test). The per-image sizes not given "
        "(--swap-pairs, --reconstruction-images, --attribute-loss-images, --regeneration-images, --validity-samples, "
        "--disentanglement-images, the loss profile's and the granularity's) are at most the test split's images "
        "(the whole set's for --disentanglement-images and the granularity)",
    )
    parser.add_argument(
        "--factors", "--factor-columns", dest="factors", nargs="+", default=None,
        help="factor columns: ClassLabel or numeric (binned; default: every ClassLabel column, else every numeric one)",
    )  # fmt: skip
    parser.add_argument(
        "--data-seed", type=int, default=None, metavar="N", help="seed of the generated images (default: --seed)"
    )
    parser.add_argument(
        "--shapes-dataset", default=None, help="the generated dataset (diti-shapes or diti-shapes-v2), as --dataset"
    )
    parser.add_argument("--shapes-factors", metavar="FILE", help="JSON list of ShapeFactor dicts (a shapes variant)")
    parser.add_argument(
        "--probe-epochs", type=common.positive_int, default=15, metavar="N", help="probe epochs (default 15)"
    )
    parser.add_argument(
        "--probe-lr", type=common.finite_float, default=None, metavar="LR", help="probe learning rate (default 1e-3)"
    )
    parser.add_argument(
        "--swap-pairs",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="counterfactual pairs (default 64, at most the test images)",
    )
    add_timesteps_argument(parser, "a swapped time-step range (repeatable; default --num-swap-ranges equal ranges)")
    parser.add_argument(
        "--oracle-epochs", type=common.positive_int, default=12, metavar="N", help="oracle epochs (default 12)"
    )
    parser.add_argument(
        "--reconstruction-images",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="images reconstructed (default 32, at most the test images)",
    )
    for flag, (dest, what) in _SIZES.items():
        parser.add_argument(flag, dest=dest, type=common.positive_int, default=None, metavar="N", help=what)
    parser.add_argument(
        "--sample-eta",
        type=common.finite_float,
        default=None,
        metavar="ETA",
        help="DDIM η of a bare DDPM's validity samples, in [0, 1] (default 0: deterministic)",
    )
    parser.add_argument(
        "--regeneration-timesteps",
        nargs="+",
        type=int,
        default=None,
        metavar="T",
        help="noise levels regenerated from (default 250 500 750 999)",
    )
    parser.add_argument(
        "--swap-protocols",
        nargs="*",
        choices=SWAP_PROTOCOLS,
        default=None,
        help="swap protocols compared (default: all; none: skip)",
    )
    for name, what in _SKIPS.items():
        parser.add_argument(
            f"--no-{name.replace('_', '-')}", dest=f"no_{name}", action="store_true", help=f"skip {what}"
        )
    parser.add_argument("--dataset-config", default=None, help="celeba / lfw: the Hub dataset's configuration")
    parser.add_argument("--columns", default=None, metavar="JSON", help='celeba / lfw: e.g. \'{"Male": "male"}\'')
    parser.add_argument("--image-column", default=None, help="celeba / lfw: the image column")
    parser.add_argument("--attributes-column", default=None, help="celeba / lfw: one column holding every attribute")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for report.json and the plots")
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    parser.set_defaults(handler=run, flags=flags | _FLAG_OF)


def add_timesteps_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str) -> None:
    """`--timesteps LO HI`, repeatable: the swapped time-step ranges `[LO, HI)`, spelt as in every `diti-hf` command
    (also by examples/evaluate.py); the parsed value is a list of `[lo, hi]` pairs, or None."""
    parser.add_argument("--timesteps", nargs=2, type=int, action="append", metavar=("LO", "HI"), help=help)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark import benchmark_arguments, is_ddpm_folder, load_model, run_benchmark

    out = common.output_dir(args.output_dir)
    device = common.check_device(args.device)
    values = {**vars(args), "swap_ranges": args.timesteps, "device": device, "progress": not args.no_progress}
    values.update(num_inference_steps=args.steps, num_swap_pairs=args.swap_pairs)
    values["num_reconstruction_images"] = args.reconstruction_images
    if args.no_baselines:
        values.update(no_random_baseline=True, no_pixel_baseline=True)
    # every size is checked here, before a model loads; the report's folder is made only once the report is ready
    with flag_errors(args.flags):
        kwargs = benchmark_arguments(values)
    sources = {"model": args.model, "baseline": args.baseline}
    models = {}
    for name, flag in (("model", "--model"), ("baseline", "--baseline")):
        if sources[name] is None:
            continue
        if is_ddpm_folder(sources[name]):
            models[name] = load_model(sources[name], device, kwargs["progress"])
        else:
            models[name] = common.load_pipeline(sources[name], device, flag, progress=kwargs["progress"])
            common.check_ranges(models[name], args.timesteps, None, required=False)
    with flag_errors(args.flags):
        report = run_benchmark(models, out, sources=sources, **kwargs)
    for name in models:
        print(_evaluation_line(name, report["models"].get(name, {})))
    print(f"wrote {out / 'report.json'}" + (f" and {', '.join(report['plots'])}" if report.get("plots") else ""))
    return 0


def flag_message(error: ValueError, flags: Mapping[str, str]) -> str | None:
    r"""
    The library's message about a parameter (it starts with `` `name` ``) with every parameter name spelt as the flag
    it came from, or `None` when the message is about no flag.

    Args:
        error (`ValueError`): The library's error.
        flags (`dict[str, str]`): Parameter name → flag (e.g. `{"num_images": "--num-images"}`).
    """
    message = common.one_line(error)
    if not any(message.startswith(f"`{name}`") for name in flags):
        return None
    return re.sub(r"`(\w+)`", lambda m: flags.get(m[1], m[0]), message)


@contextlib.contextmanager
def flag_errors(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raises the library's `ValueError` about a parameter as a `UsageError` in terms of the flags."""
    try:
        yield
    except ValueError as error:
        message = flag_message(error, flags)
        if message is None:
            raise
        raise common.UsageError(message) from None


def _evaluation_line(name: str, entry: dict) -> str:
    """One model's headline numbers, rounded as the README and the report print them (the JSON keeps full precision)."""
    if "mean_accuracy" not in (entry.get("probe") or {}):  # celeba / lfw: the means of the attribute metrics
        means = [f"{key.removeprefix('mean_')} {value:.3f}" for key, value in entry.items() if key.startswith("mean_")]
        return f"{name}: " + (", ".join(means) or "no probe")
    line = f"{name}: mean probe accuracy {entry['probe']['mean_accuracy']:.3f}"
    spearman = (entry.get("alignment") or {}).get("spearman_timestep_vs_granularity")
    if entry.get("alignment"):
        line += ", alignment Spearman " + ("n/a" if spearman is None else f"{spearman:.2f}")
    return line

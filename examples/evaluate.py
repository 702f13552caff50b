#!/usr/bin/env python
"""Evaluate DiTi / PDAE pipelines: linear probes, time-step alignment, counterfactual score, reconstruction.

On the procedural shapes benchmark (known factors; baselines: a random-init encoder and raw pixels):

    python examples/evaluate.py --model diti=./diti-shapes --model pdae=./pdae-shapes \
        --num_images 3000 --seed 1 --timesteps 0 500 --timesteps 500 1000 --output_dir ./eval-shapes

writes `report.json` and plots (probe accuracies, factors × chunks alignment heatmaps, flip-rate matrices).
The run is `diti_hf.evaluation.run_benchmark`, the same as `diti-hf evaluate`'s (which spells the flags with dashes).
A shapes variant with other factors: `--shapes_factors factors.json` (a list of `ShapeFactor` dicts).

The paper's real-data protocols (docs/method.md §9), from any 🤗 dataset with those attributes:

    python examples/evaluate.py --protocol celeba --dataset <hub-id-or-folder> --model diti=./diti-celeba64 \
        --columns '{"Male": "male"}' --output_dir ./eval-celeba
    python examples/evaluate.py --protocol lfw --dataset <hub-id-or-folder> --model diti=... --output_dir ./eval-lfw
"""

from __future__ import annotations

import argparse
import logging

import torch

from diti_hf.commands.evaluate import add_timesteps_argument, flag_message
from diti_hf.data.shapes import SHAPES_DATASETS
from diti_hf.evaluation import PROTOCOLS, benchmark_arguments, run_benchmark
from diti_hf.evaluation.control import SWAP_PROTOCOLS
from diti_hf.training.args import OneLineArgumentParser, ScriptArgumentError
from diti_hf.training.run import run_script

FLAG_OF = {"swap_ranges": "--timesteps"}  # the library's names that are not the flags' own


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="A pipeline folder or Hub id to evaluate, named (repeat for several, e.g. diti=... pdae=...).",
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="shapes", help="Benchmark (default: shapes).")
    p.add_argument("--output_dir", required=True, help="Where report.json and the plots go.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0, help="Seed of the data, splits, probes, oracle and pairs.")
    g = p.add_argument_group("shapes benchmark")
    g.add_argument(
        "--num_images",
        type=int,
        default=3000,
        help="Images generated (default 3000; split 60/20/20). Per-image sizes not given are at most the test "
        "split's images (the whole set's for --disentanglement_images).",
    )
    g.add_argument("--data_seed", type=int, default=None, help="Seed of the generated images (default: --seed).")
    g.add_argument("--resolution", type=int, default=None, help="Image side (default: the first model's).")
    g.add_argument(
        "--shapes_dataset",
        default=None,
        choices=sorted(SHAPES_DATASETS),
        help="Built-in factor set (diti_hf.data.shapes.SHAPES_DATASETS; default diti-shapes).",
    )
    g.add_argument("--shapes_factors", default=None, help="JSON file with a list of ShapeFactor dicts (a variant).")
    g.add_argument("--num_inference_steps", type=int, default=20, help="DDIM steps of swaps and reconstructions.")
    add_timesteps_argument(
        g, "A time-step range [LO, HI) to swap (repeatable; default --num_swap_ranges equal ranges)."
    )
    g.add_argument("--num_swap_ranges", type=int, default=4, help="Equal ranges when --timesteps is not given.")
    g.add_argument("--num_swap_pairs", type=int, default=None, help="Default 64, at most the test images.")
    g.add_argument("--oracle_epochs", type=int, default=12)
    g.add_argument("--num_reconstruction_images", type=int, default=None, help="Default 32, at most the test images.")
    g.add_argument("--max_alignment_groups", type=int, default=64)
    g.add_argument("--no_counterfactual", action="store_true")
    g.add_argument("--no_reconstruction", action="store_true")
    g.add_argument("--no_attribute_loss", action="store_true", help="Skip the DDPM attribute-loss times.")
    g.add_argument("--num_attribute_loss_images", type=int, default=None, help="Default 128, at most the test images.")
    g.add_argument("--no_loss_profile", action="store_true", help="Skip the frozen DDPM's loss profile.")
    g.add_argument("--no_regeneration", action="store_true", help="Skip the regeneration keep-rates.")
    g.add_argument(
        "--regeneration_timesteps",
        type=int,
        nargs="+",
        default=[250, 500, 750, 999],
        help="Noise levels of the regeneration keep-rates.",
    )
    g.add_argument("--num_regeneration_images", type=int, default=None, help="Default 48, at most the test images.")
    g.add_argument(
        "--swap_protocols",
        nargs="*",
        default=None,
        choices=SWAP_PROTOCOLS,
        help="Swap protocols compared on the counterfactual pairs (default: all; none: skip).",
    )
    g.add_argument("--no_sample_validity", action="store_true", help="Skip reading the DDPM's samples.")
    g.add_argument("--num_validity_samples", type=int, default=None, help="Default 64, at most the test images.")
    g.add_argument("--num_sample_steps", type=int, default=50, help="DDIM steps of the DDPM's samples.")
    g.add_argument("--sample_eta", type=float, default=0.0, help="DDIM η of a bare DDPM's samples (0: deterministic).")
    g.add_argument("--no_random_baseline", action="store_true")
    g.add_argument("--no_pixel_baseline", action="store_true")
    g.add_argument("--no_disentanglement", action="store_true", help="Skip DCI / MIG / SAP / FactorVAE.")
    g.add_argument(
        "--disentanglement_images", type=int, default=None, help="Images of those metrics (default 1000, at most all)."
    )
    g.add_argument("--no_plots", action="store_true")
    g.add_argument("--batch_size", type=int, default=None, help="Swap and encoding batch size (default 16 and 256).")
    r = p.add_argument_group("a dataset: celeba / lfw, or factor ClassLabel columns with --protocol shapes")
    r.add_argument(
        "--dataset",
        default=None,
        help="Hub dataset id or local folder (required for celeba / lfw; with shapes, ClassLabel factors).",
    )
    r.add_argument("--split", default="train", help="Split of a --dataset evaluated with --protocol shapes.")
    r.add_argument(
        "--factors",
        "--factor_columns",
        dest="factors",
        nargs="+",
        default=None,
        help="Factor columns, ClassLabel or numeric (binned; default: every ClassLabel column, else every numeric one).",
    )
    r.add_argument("--dataset_config", default=None, help="Dataset configuration name.")
    r.add_argument("--columns", default=None, help='JSON attribute → column mapping, e.g. \'{"Male": "male"}\'.')
    r.add_argument("--image_column", default=None)
    r.add_argument("--attributes_column", default=None, help="One sequence column holding every attribute.")
    r.add_argument("--max_samples", type=int, default=None, help="Rows per split (quick runs).")
    q = p.add_argument_group("linear probes")
    q.add_argument("--probe_epochs", type=int, default=15)
    q.add_argument("--probe_lr", type=float, default=1e-3)
    q.add_argument("--probe_batch_size", type=int, default=128)
    return p  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags (the checks are `run_benchmark`'s); an impossible flag exits with code 2 and a
    one-line message naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--model must be NAME=PATH, got {item!r}.")
        if name in models or name in ("random_init", "pixels"):
            parser.error(f"--model name {name!r} is repeated or reserved for a baseline.")
        models[name] = path
    args.models = models
    args.flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings} | FLAG_OF
    try:  # every size, --num_images against its minimum included, before a model loads
        args.benchmark = benchmark_arguments({**vars(args), "swap_ranges": args.timesteps})
    except ValueError as error:
        parser.error(flag_message(error, args.flags) or str(error))
    return args


def main(args: argparse.Namespace) -> dict:
    """Runs the evaluation (`diti_hf.evaluation.run_benchmark`) and returns the report (also written to
    `output_dir/report.json`)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return run_benchmark(args.models, args.output_dir, **args.benchmark)
    except ValueError as error:
        message = flag_message(error, args.flags)
        if message is None:
            raise
        raise ScriptArgumentError(message) from None


if __name__ == "__main__":
    run_script(main, parse_args)

#!/usr/bin/env python
"""Evaluate DiTi / PDAE pipelines: linear probes, time-step alignment, counterfactual score, reconstruction.

On the procedural shapes benchmark (known factors; baselines: a random-init encoder and raw pixels):

    python examples/evaluate.py --model diti=./diti-shapes --model pdae=./pdae-shapes \
        --num_images 3000 --seed 1 --output_dir ./eval-shapes

writes `report.json` and plots (probe accuracies, factors × chunks alignment heatmaps, flip-rate matrices).
A shapes variant with other factors: `--shapes_factors factors.json` (a list of `ShapeFactor` dicts).

The paper's real-data protocols (docs/method.md §9), from any 🤗 dataset with those attributes:

    python examples/evaluate.py --protocol celeba --dataset <hub-id-or-folder> --model diti=./diti-celeba64 \
        --columns '{"Male": "male"}' --output_dir ./eval-celeba
    python examples/evaluate.py --protocol lfw --dataset <hub-id-or-folder> --model diti=... --output_dir ./eval-lfw
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from diti_hf.data.shapes import SHAPES_DATASETS
from diti_hf.evaluation.control import SWAP_PROTOCOLS
from diti_hf.training.args import OneLineArgumentParser, ScriptArgumentError
from diti_hf.training.run import run_script

logger = logging.getLogger("evaluate")

PROTOCOLS = ("shapes", "celeba", "lfw")


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
    g.add_argument("--num_images", type=int, default=3000, help="Images generated (default 3000).")
    g.add_argument("--data_seed", type=int, default=None, help="Seed of the generated images (default: --seed).")
    g.add_argument("--resolution", type=int, default=None, help="Image side (default: the first model's).")
    g.add_argument(
        "--shapes_dataset",
        default="diti-shapes",
        choices=sorted(SHAPES_DATASETS),
        help="Built-in factor set (diti_hf.data.shapes.SHAPES_DATASETS).",
    )
    g.add_argument("--shapes_factors", default=None, help="JSON file with a list of ShapeFactor dicts (a variant).")
    g.add_argument("--num_inference_steps", type=int, default=20, help="DDIM steps of swaps and reconstructions.")
    g.add_argument("--swap_ranges", default=None, help='Time-step ranges to swap, e.g. "0:250,250:500,500:1000".')
    g.add_argument("--num_swap_ranges", type=int, default=4, help="Equal ranges when --swap_ranges is not given.")
    g.add_argument("--num_swap_pairs", type=int, default=64)
    g.add_argument("--oracle_epochs", type=int, default=12)
    g.add_argument("--num_reconstruction_images", type=int, default=64)
    g.add_argument("--max_alignment_groups", type=int, default=64)
    g.add_argument("--no_counterfactual", action="store_true")
    g.add_argument("--no_reconstruction", action="store_true")
    g.add_argument("--no_attribute_loss", action="store_true", help="Skip the DDPM attribute-loss times.")
    g.add_argument("--num_attribute_loss_images", type=int, default=128)
    g.add_argument("--no_loss_profile", action="store_true", help="Skip the frozen DDPM's loss profile.")
    g.add_argument("--no_regeneration", action="store_true", help="Skip the regeneration keep-rates.")
    g.add_argument(
        "--regeneration_timesteps",
        type=int,
        nargs="+",
        default=[250, 500, 750, 999],
        help="Noise levels of the regeneration keep-rates.",
    )
    g.add_argument("--num_regeneration_images", type=int, default=48)
    g.add_argument(
        "--swap_protocols",
        nargs="*",
        default=None,
        choices=SWAP_PROTOCOLS,
        help="Swap protocols compared on the counterfactual pairs (default: all; none: skip).",
    )
    g.add_argument("--no_sample_validity", action="store_true", help="Skip reading the DDPM's samples.")
    g.add_argument("--num_validity_samples", type=int, default=64)
    g.add_argument("--num_sample_steps", type=int, default=50, help="DDIM steps of the DDPM's samples.")
    g.add_argument("--no_random_baseline", action="store_true")
    g.add_argument("--no_pixel_baseline", action="store_true")
    g.add_argument("--no_plots", action="store_true")
    r = p.add_argument_group("celeba / lfw protocols")
    r.add_argument("--dataset", default=None, help="Hub dataset id or local folder (required for celeba / lfw).")
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


def _parse_ranges(text: str) -> list[tuple[int, int]]:
    try:
        ranges = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
    except ValueError as err:
        raise ScriptArgumentError(f'--swap_ranges must look like "0:250,250:1000", got {text!r}.') from err
    if any(len(r) != 2 or not 0 <= r[0] < r[1] for r in ranges):
        raise ScriptArgumentError(f"--swap_ranges must be lo:hi pairs with 0 <= lo < hi, got {text!r}.")
    return ranges


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags; an impossible flag exits with code 2 and a one-line message."""
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
    if args.protocol != "shapes" and not args.dataset:
        parser.error(f"--protocol {args.protocol} needs --dataset (a Hub id or a local folder).")
    for flag in ("num_images", "num_inference_steps", "num_swap_ranges", "num_swap_pairs", "oracle_epochs",
                 "probe_epochs", "probe_batch_size", "num_attribute_loss_images", "num_regeneration_images",
                 "num_validity_samples", "num_sample_steps"):  # fmt: skip
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}.")
    if args.columns is not None:
        try:
            args.columns = json.loads(args.columns)
        except json.JSONDecodeError as err:
            parser.error(f"--columns must be a JSON object: {err}")
        if not isinstance(args.columns, dict):
            parser.error("--columns must be a JSON object mapping attribute names to column names.")
    return args


def _load_model(path: str):
    """A DiTiPipeline, or a bare DDPM pipeline (diagnostics of the frozen DDPM only)."""
    from diffusers import DDPMPipeline

    from diti_hf.pipelines import DiTiPipeline

    index = Path(path) / "model_index.json"
    if index.is_file() and json.loads(index.read_text()).get("_class_name") == "DDPMPipeline":
        return DDPMPipeline.from_pretrained(path)
    return DiTiPipeline.from_pretrained(path)


def main(args: argparse.Namespace) -> dict:
    """Runs the evaluation and returns the report (also written to `output_dir/report.json`)."""
    from diti_hf.data.schemas import CELEBA_SCHEMA, LFW_SCHEMA
    from diti_hf.data.shapes import ShapeFactor, factors_to_json, generate_shapes
    from diti_hf.evaluation import EvaluationConfig, ProbeConfig, attribute_protocol, evaluate_pipeline, json_safe
    from diti_hf.evaluation.adapters import pipeline_functions

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipes = {}
    for name, path in args.models.items():
        logger.info("loading %s from %s", name, path)
        pipe = _load_model(path).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = pipe

    if args.protocol == "shapes":
        factors = SHAPES_DATASETS[args.shapes_dataset]()
        if args.shapes_factors:
            factors = [ShapeFactor(**f) for f in json.loads(Path(args.shapes_factors).read_text())]
        resolution = args.resolution or int(next(iter(pipes.values())).unet.config.sample_size)
        data_seed = args.seed if args.data_seed is None else args.data_seed
        dataset = generate_shapes(args.num_images, seed=data_seed, resolution=resolution, factors=factors)
        config = EvaluationConfig(
            seed=args.seed,
            probe=ProbeConfig(
                epochs=args.probe_epochs, lr=args.probe_lr, batch_size=args.probe_batch_size, seed=args.seed
            ),
            max_alignment_groups=args.max_alignment_groups,
            random_baseline=not args.no_random_baseline,
            pixel_baseline=not args.no_pixel_baseline,
            counterfactual=not args.no_counterfactual,
            swap_ranges=_parse_ranges(args.swap_ranges) if args.swap_ranges else None,
            num_swap_ranges=args.num_swap_ranges,
            num_swap_pairs=args.num_swap_pairs,
            oracle_epochs=args.oracle_epochs,
            attribute_loss=not args.no_attribute_loss,
            num_attribute_loss_images=args.num_attribute_loss_images,
            reconstruction=not args.no_reconstruction,
            num_reconstruction_images=args.num_reconstruction_images,
            num_inference_steps=args.num_inference_steps,
            loss_profile=not args.no_loss_profile,
            regeneration=not args.no_regeneration,
            regeneration_timesteps=args.regeneration_timesteps,
            num_regeneration_images=args.num_regeneration_images,
            swap_protocols=list(SWAP_PROTOCOLS) if args.swap_protocols is None else args.swap_protocols,
            sample_validity=not args.no_sample_validity,
            num_validity_samples=args.num_validity_samples,
            num_sample_steps=args.num_sample_steps,
            plots=not args.no_plots,
        )
        info = {"name": args.shapes_dataset, "seed": data_seed,
                "factor_specs": json.loads(factors_to_json(factors))["factors"]}  # fmt: skip
        report = evaluate_pipeline(pipes, dataset, config, output_dir=output_dir, dataset_info=info)
    else:
        schema = {"celeba": CELEBA_SCHEMA, "lfw": LFW_SCHEMA}[args.protocol]
        changes = {}
        if args.image_column:
            changes["image_column"] = args.image_column
        if args.attributes_column:
            changes["attributes_column"] = args.attributes_column
        try:
            schema = schema.with_columns(args.columns or {}, **changes)
        except ValueError as err:
            raise ScriptArgumentError(str(err)) from err
        probe = ProbeConfig(
            epochs=args.probe_epochs, lr=args.probe_lr, batch_size=args.probe_batch_size, selection="joint"
        )
        load_kwargs = {"name": args.dataset_config} if args.dataset_config else {}
        report = {"protocol": args.protocol, "dataset": args.dataset, "models": {}}
        for name, pipe in pipes.items():
            if int(pipe.encoder.config.sample_size) != schema.resolution:
                schema = schema.with_columns({}, resolution=int(pipe.encoder.config.sample_size))
            fns = pipeline_functions(pipe)
            report["models"][name] = attribute_protocol(
                fns.encode_fn, args.dataset, schema, probe, seed=args.seed, max_samples=args.max_samples, **load_kwargs
            )
        report = json_safe(report)
        (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    logger.info("report written to %s", output_dir / "report.json")
    return report


if __name__ == "__main__":
    run_script(main, parse_args)

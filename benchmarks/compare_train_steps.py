"""Variants of one benchmark configuration's training step, alternated step by step in one process.

The sibling of `ab_train_step.py` for settings rather than revisions: each `--variant` is a comma-separated list of
`bench_train_step.py` options that override the base ones (`batch_size=64`, `channels_last`,
`compile,compile_parts=trainable`, or `base` for none). All variants are built in one process and then run in turn, one step each,
for `--rounds` rounds, so that every variant sees the same drift of a shared host; a one-thread fp32 matmul is
measured after every round. Reports (JSON) each variant's median images/s, its median per-round ratio to the first
variant (images/s, > 1: faster), its fraction of the same-round matmul if `--gflop_per_image`
is given, and its warm-up (compile) time.

Example: `OMP_NUM_THREADS=1 python benchmarks/compare_train_steps.py --config shapes32 --threads 1 --variant base
--variant channels_last --variant batch_size=64`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench_train_step import add_configuration_arguments, batch_size_of, build_step
from bench_utils import configure_process, matmul_gflops


def variant_args(base: argparse.Namespace, spec: str) -> argparse.Namespace:
    """`base` with the overrides of `spec` (`key=value` or a bare flag name; `base` = none)."""
    values = dict(vars(base))
    for item in filter(None, spec.split(",")):
        if item == "base":
            continue
        key, _, value = item.partition("=")
        if key not in values:
            raise SystemExit(f"unknown option in --variant {spec!r}: {key}")
        if not value:
            values[key] = True
        elif key == "compile_parts":
            values[key] = tuple(value.split("+"))
        else:
            values[key] = type(values[key])(value) if values[key] is not None else int(value)
    return argparse.Namespace(**values)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_configuration_arguments(parser)
    parser.add_argument(
        "--variant", action="append", required=True, help="Overrides; repeat, the first is the reference."
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="Untimed steps of each variant (compilation happens here)."
    )
    parser.add_argument("--rounds", type=int, default=7, help="Timed rounds (one step of every variant each).")
    parser.add_argument("--gflop_per_image", type=float, default=None, help="From bench_train_step.py, for fractions.")
    args = parser.parse_args(argv)
    configure_process(args)
    variants = {spec: variant_args(args, spec) for spec in args.variant}
    steps, warmup_seconds = {}, {}
    for spec, vargs in variants.items():
        steps[spec] = build_step(vargs)
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[spec]()
        warmup_seconds[spec] = time.perf_counter() - start
    times = {spec: [] for spec in steps}
    limits = []
    for _ in range(args.rounds):
        for spec, step in steps.items():
            start = time.perf_counter()
            step()
            times[spec].append(time.perf_counter() - start)
        limits.append(matmul_gflops(repeats=5))
    reference = args.variant[0]
    result = {"config": args.config, "threads": args.threads, "matmul_gflops": [round(g, 1) for g in limits]}
    rows = {}
    for spec, values in times.items():
        batch = batch_size_of(variants[spec])
        rate = [batch / t for t in values]
        ref_rate = [batch_size_of(variants[reference]) / t for t in times[reference]]
        row = {
            "batch_size": batch,
            "step_seconds": [round(t, 4) for t in values],
            "images_per_s": round(statistics.median(rate), 2),
            "ratio_to_first": round(statistics.median(r / q for r, q in zip(rate, ref_rate)), 3),
            "warmup_seconds": round(warmup_seconds[spec], 1),
        }
        if args.gflop_per_image:
            row["fraction_of_matmul"] = round(
                statistics.median(r * args.gflop_per_image / g for r, g in zip(rate, limits)), 3
            )
        rows[spec] = row
    result["variants"] = rows
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

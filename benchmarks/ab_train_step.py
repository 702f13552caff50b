"""A/B of the training step: this checkout against a git revision, alternating steps in one process.

A change worth a few percent is invisible between separate runs on a shared host whose speed drifts by more than
that; alternating the two versions step by step in one process puts both under the same drift. The baseline's
`src/diti_hf` is extracted with `git archive` into a temporary directory and imported as `diti_baseline`; both
versions build the benchmark configuration of `bench_train_step.py` with the same seed and data.

Reports (JSON on stdout) the median step time of each version and the median of the per-pair ratios
baseline / current (> 1: the checkout is faster). Example: `python benchmarks/ab_train_step.py --baseline HEAD~1`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diti_hf
from bench_train_step import add_configuration_arguments, batch_size_of, build_step
from bench_utils import configure_process

REPO = Path(__file__).resolve().parent.parent


def import_baseline(revision: str, directory: Path) -> object:
    """`src/diti_hf` at `revision`, imported as the package `diti_baseline`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "src/diti_hf"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    package = directory / "diti_baseline"
    (directory / "src" / "diti_hf").rename(package)
    for source in package.rglob("*.py"):  # absolute imports of the package name, if any, point at the copy
        source.write_text(source.read_text().replace("diti_hf", "diti_baseline"))
    # loaded from its folder; its submodules are found through the registered package's __path__
    spec = importlib.util.spec_from_file_location(
        "diti_baseline", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    baseline = importlib.util.module_from_spec(spec)
    sys.modules["diti_baseline"] = baseline
    spec.loader.exec_module(baseline)
    for submodule in ("models", "training"):
        importlib.import_module(f"diti_baseline.{submodule}")
    return baseline


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline",
        required=True,
        help="A git revision, e.g. `HEAD~1` or `main`; or `reference-ops`: this checkout with the decoder's CPU kernels "
        "switched back to the plain PyTorch ops (diti_hf.models._cpu_kernels.use_reference_ops).",
    )
    add_configuration_arguments(parser)
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps of each version.")
    parser.add_argument("--pairs", type=int, default=10, help="Timed (baseline, current) step pairs.")
    args = parser.parse_args(argv)
    configure_process(args)
    with tempfile.TemporaryDirectory() as directory:
        if args.baseline == "reference-ops":
            from diti_hf.models._cpu_kernels import use_reference_ops

            current = build_step(args, diti_hf)

            def reference_step() -> None:
                use_reference_ops(True)
                try:
                    current()
                finally:
                    use_reference_ops(False)

            steps = {"baseline": reference_step, "current": current}
        else:
            baseline = import_baseline(args.baseline, Path(directory))
            steps = {"baseline": build_step(args, baseline), "current": build_step(args, diti_hf)}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        times = {name: [] for name in steps}
        for _ in range(args.pairs):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    result = {
        "baseline": args.baseline,
        "threads": args.threads,
        "config": args.config,
        "batch_size": batch_size_of(args),
        "step_seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
        "median_step_seconds": {name: round(statistics.median(values), 3) for name, values in times.items()},
        "median_ratio_baseline_over_current": round(
            statistics.median(b / c for b, c in zip(times["baseline"], times["current"])), 3
        ),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

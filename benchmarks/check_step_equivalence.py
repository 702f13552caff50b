"""Do two variants of a benchmark training step compute the same thing? Loss, gradients and parameters, compared.

Both variants are built as in `compare_train_steps.py` (same seed: same weights, data, time-steps and noise) and run
`--steps` steps each. Reports per step the loss difference and the largest gradient difference relative to the step's
largest gradient entry, and after the last step the largest parameter difference. Meant for `--compile` and
layout variants, whose results should agree to float32 rounding.

Example: `OMP_NUM_THREADS=1 python benchmarks/check_step_equivalence.py --config shapes32 --threads 1 --variant base
--variant compile`.
"""

from __future__ import annotations

import argparse
import json

from bench_train_step import add_configuration_arguments, build_step
from bench_utils import configure_process
from compare_train_steps import variant_args


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_configuration_arguments(parser)
    parser.add_argument("--variant", action="append", required=True, help="Exactly two, as in compare_train_steps.")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if len(args.variant) != 2:
        raise SystemExit("--variant: give exactly two")
    configure_process(args)
    runs = []
    for spec in args.variant:
        step = build_step(variant_args(args, spec))
        step.state["keep"] = True
        losses, gradients = [], []
        for _ in range(args.steps):
            step()
            losses.append(step.state["loss"].item())
            gradients.append(step.state["gradients"])
        runs.append((losses, gradients, [p.detach().clone() for p in step.state["parameters"]]))
    (losses_a, grads_a, params_a), (losses_b, grads_b, params_b) = runs
    per_step = []
    for i in range(args.steps):
        pairs = [(a, b) for a, b in zip(grads_a[i], grads_b[i]) if a is not None and b is not None]
        # against the largest gradient entry of the whole step: near-zero gradients (zero-initialised outputs) differ
        # by their rounding noise, which is large relative to themselves and meaningless
        scale = max(a.abs().max().item() for a, _ in pairs)
        worst = max((a - b).abs().max().item() for a, b in pairs) / scale
        per_step.append(
            {
                "loss": [losses_a[i], losses_b[i]],
                "loss_relative_difference": abs(losses_a[i] - losses_b[i]) / abs(losses_a[i]),
                "max_gradient_difference_relative_to_largest_gradient": worst,
            }
        )
    result = {
        "variants": args.variant,
        "steps": per_step,
        "max_parameter_difference_after": max((a - b).abs().max().item() for a, b in zip(params_a, params_b)),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

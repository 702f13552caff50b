"""Where a training step's time goes: torch.profiler over `bench_train_step.py`'s step, ops summed by category.

Categories (self CPU time of the ATen ops, so nested ops are not counted twice): convolutions forward and backward
by input resolution, GroupNorm, SiLU, attention (the 8×8 / 16×16 self-attention's matmuls, softmax and
projections), the optimizer (fused AdamW), upsampling, element-wise/copy ops and the rest. "Outside ATen ops" is the
step's wall time minus the sum of all ops' self times: Python, autograd's engine and the profiler's own overhead
(which inflates it; the fixed per-step cost is better read from `--batch_sizes`).

`--batch_sizes 8 16 32 64` also times the unprofiled step at each batch size (median of --repeats, each next to a
matmul) and fits `seconds = fixed + per_image · batch`: `fixed` is the per-step cost that does not grow with the
batch (Python, per-module dispatch, the optimizer).

Example (one thread): `OMP_NUM_THREADS=1 python benchmarks/profile_train_step.py --config shapes32 --threads 1`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile

from bench_train_step import add_configuration_arguments, batch_size_of, build_step
from bench_utils import configure_process, matmul_gflops

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::thnn_conv2d")
ATTENTION_OPS = ("aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::_softmax_backward_data", "aten::addmm")
ATTENTION_OPS += ("aten::mm", "aten::_scaled_dot_product_flash_attention_for_cpu")
ATTENTION_OPS += ("aten::_scaled_dot_product_flash_attention_for_cpu_backward",)
ELEMENTWISE = re.compile(r"aten::(add|mul|sub|div|addcmul|copy_|cat|clone|contiguous|fill_|zero_|sum|mean|pow|sqrt)")


def category(name: str, shapes: list) -> str:
    if name in CONV_OPS:
        kind = "backward" if "backward" in name else "forward"
        # convolution_backward: (grad_output, input, weight, ...); forward: (input, weight, ...)
        source = shapes[1] if kind == "backward" and len(shapes) > 1 else (shapes[0] if shapes else [])
        size = source[-1] if source else "?"
        return f"conv {kind} {size}px"
    if "group_norm" in name:
        return "GroupNorm"
    if "silu" in name:
        return "SiLU"
    if "adam" in name:
        return "optimizer"
    if "upsample" in name:
        return "upsampling"
    if name in ATTENTION_OPS or "softmax" in name:
        return "matmul ops (attention, linear layers)"
    if ELEMENTWISE.match(name):
        return "element-wise, copies, cat, reductions"
    return "other"


def profile_step(step, steps: int) -> dict:
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        if event.self_cpu_time_total <= 0:
            continue
        totals[category(event.key, event.input_shapes or [])] += event.self_cpu_time_total / 1e6 / steps
    ops = sum(totals.values())
    rows = dict(sorted(totals.items(), key=lambda kv: -kv[1]))
    rows["outside ATen ops (Python, autograd engine, profiler)"] = wall - ops
    return {
        "profiled_step_seconds": round(wall, 4),
        "seconds_per_step": {k: round(v, 4) for k, v in rows.items()},
        "share": {k: round(v / wall, 3) for k, v in rows.items()},
        "top_ops": [
            (e.key, round(e.self_cpu_time_total / 1e6 / steps, 4), e.count // steps)
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_configuration_arguments(parser)
    parser.add_argument("--steps", type=int, default=5, help="Profiled steps (after 2 untimed).")
    parser.add_argument("--batch_sizes", type=int, nargs="*", default=(), help="Also fit time against batch size.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    configure_process(args)
    result = {"config": args.config, "threads": args.threads, "batch_size": batch_size_of(args)}
    result.update(profile_step(build_step(args), args.steps))
    if args.batch_sizes:
        fit = []
        for batch in args.batch_sizes:
            step = build_step(argparse.Namespace(**{**vars(args), "batch_size": batch}))
            for _ in range(2):
                step()
            times, limits = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
                limits.append(matmul_gflops(repeats=5))
            fit.append((batch, statistics.median(times), statistics.median(limits)))
        batches, seconds = [b for b, _, _ in fit], [s for _, s, _ in fit]
        slope, intercept = statistics.linear_regression(batches, seconds)
        result["batch_fit"] = {
            "rows": [{"batch": b, "step_seconds": round(s, 4), "matmul_gflops": round(g, 1)} for b, s, g in fit],
            "fixed_seconds_per_step": round(intercept, 4),
            "seconds_per_image": round(slope, 5),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

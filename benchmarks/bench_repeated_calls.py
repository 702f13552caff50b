"""Identical pipeline calls repeated in one fresh process: how much slower is the first, and what does the package
have to do with it?

Each configuration runs in its own new Python process: load the shipped `pretrained/diti-shapes32`, then `--calls`
identical `pipe.invert(images, num_inference_steps=--steps)` calls on `--batch_size` procedural 32×32 images. For every
call it records the wall time, the minor page faults, and the speed of a 1024² float32 matmul measured right after it
(on a shared host the machine's own speed drifts; a call that is slow together with its matmul was slowed by the
host, not by the package). Configurations:

- `default`: what a Python API user gets after `import diti_hf` (torch's default thread count, glibc's allocator);
- `threads1`: `torch.set_num_threads(1)`;
- `threads1_reuse`: that and `diti_hf.reuse_freed_memory()` (what the `diti-hf` CLI and the training scripts do);
- `threads1_flush_denormal`: one thread and `torch.set_flush_denormal(True)`.

The allocator and denormal settings are compared at one thread, where the timings are steadiest on a shared host.

It also counts the subnormal float32 values in the UNet's and decoder's block outputs during one call (if there are
none, flushing denormals cannot change the speed).

    python benchmarks/bench_repeated_calls.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("default", "threads1", "threads1_reuse", "threads1_flush_denormal")


def run_config(config: str, calls: int, steps: int, batch_size: int) -> dict:
    """The measurements of one configuration in this process (call in a fresh process)."""
    import torch

    import diti_hf
    from bench_utils import matmul_gflops
    from diti_hf.data import generate_shapes

    if "threads1" in config:
        torch.set_num_threads(1)
    if "reuse" in config:
        diti_hf.reuse_freed_memory()
    if "flush_denormal" in config:
        torch.set_flush_denormal(True)
    start = time.perf_counter()
    pipe = diti_hf.DiTiPipeline.from_pretrained(ROOT / "pretrained" / "diti-shapes32")
    pipe.set_progress_bar_config(disable=True)
    load_seconds = time.perf_counter() - start
    images = list(generate_shapes(batch_size, seed=0, resolution=32)["image"])
    seconds, faults, gflops = [], [], []
    for _ in range(calls):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        pipe.invert(images, num_inference_steps=steps)
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        gflops.append(matmul_gflops(n=1024, repeats=3))
    return {
        "config": config,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_seconds, 3),
        "seconds": [round(s, 3) for s in seconds],
        "minor_page_faults": faults,
        "matmul_gflops_after": [round(g, 1) for g in gflops],
        "first_over_median_of_rest": round(seconds[0] / statistics.median(seconds[1:]), 2) if calls > 1 else None,
    }


def count_subnormals(steps: int, batch_size: int) -> dict:
    """Subnormal float32 values among the outputs of the UNet's and the decoder's blocks during one inversion."""
    import torch

    import diti_hf
    from diti_hf.data import generate_shapes

    pipe = diti_hf.DiTiPipeline.from_pretrained(ROOT / "pretrained" / "diti-shapes32")
    pipe.set_progress_bar_config(disable=True)
    tiny = torch.finfo(torch.float32).tiny
    counts = {"values": 0, "subnormal": 0}

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            counts["values"] += out.numel()
            counts["subnormal"] += int(((out != 0) & (out.abs() < tiny)).sum())

    for model in (pipe.unet, pipe.decoder):
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.Linear)):
                module.register_forward_hook(hook)
    pipe.invert(list(generate_shapes(batch_size, seed=0, resolution=32)["image"]), num_inference_steps=steps)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS, help="Configurations.")
    parser.add_argument("--repeats", type=int, default=1, help="Fresh processes per configuration (interleaved).")
    parser.add_argument("--calls", type=int, default=8, help="Identical calls per process.")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of each inversion.")
    parser.add_argument("--batch_size", type=int, default=8, help="Images per call.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "subnormals":
        print(json.dumps(count_subnormals(args.steps, args.batch_size)))
        return
    if args.child is not None:
        print(json.dumps(run_config(args.child, args.calls, args.steps, args.batch_size)))
        return
    common = ["--calls", str(args.calls), "--steps", str(args.steps), "--batch_size", str(args.batch_size)]
    for _ in range(args.repeats):
        for config in args.configs:
            out = subprocess.run(
                [sys.executable, __file__, "--child", config, *common], capture_output=True, text=True, check=True
            ).stdout
            print(out.strip().splitlines()[-1], flush=True)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "subnormals", *common], capture_output=True, text=True, check=True
    ).stdout
    print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

"""Shared by the benchmark scripts: device/precision options, timing, and the same-run compute limit that every ratio
is taken against."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from diti_hf import reuse_freed_memory

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`, `--precision` (bf16 = autocast) and `--compile`, the same in every benchmark."""
    parser.add_argument("--device", default="cpu", help="`cpu` or `cuda` (or `cuda:N`).")
    parser.add_argument(
        "--precision", default="fp32", choices=sorted(PRECISIONS), help="`bf16` runs the models under autocast."
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the models (compile time is spent in warm-up)."
    )
    parser.add_argument(
        "--default_malloc",
        action="store_true",
        help="Keep glibc's default allocator settings (by default `diti_hf.reuse_freed_memory()` is applied, as the "
        "`diti-hf` CLI and the training scripts on CPU do).",
    )
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="The chip's datasheet peak for --precision (dense TFLOP/s), to report the fraction reached.",
    )


def configure_process(args: argparse.Namespace) -> None:
    """Threads and allocator settings from the parsed arguments (`--threads`, `--default_malloc`)."""
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        reuse_freed_memory()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(call: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` calls, the device synchronised around each."""
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def timings_with_matmul(
    call: Callable[[], object], warmup: int, repeats: int, device: torch.device, precision: str = "fp32"
) -> tuple[list[float], list[float]]:
    """
    [`seconds_per_call`], and after each call the speed of a dense matmul (GFLOP/s, see [`matmul_gflops`]): on a
    shared machine whose speed drifts, each timing is compared with the compute limit measured next to it.
    """
    seconds_per_call(call, warmup, 0, device)
    times, limits = [], []
    for _ in range(repeats):
        times += seconds_per_call(call, 0, 1, device)
        limits.append(matmul_gflops(device=device, precision=precision, repeats=5))
    return times, limits


def matmul_gflops(
    n: int | None = None, repeats: int = 10, device: torch.device | str = "cpu", precision: str = "fp32"
) -> float:
    """
    Median speed of a dense `n×n` matmul in this process (GFLOP/s) in `precision` on `device`, after 3 warm-up
    products. `n` defaults to 2048 on CPU and 8192 on a GPU (large enough to reach the tensor cores' rate).
    """
    device = torch.device(device)
    n = n or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device, dtype=PRECISIONS[precision])
    b = torch.randn(n, n, device=device, dtype=PRECISIONS[precision])
    times = seconds_per_call(lambda: a @ b, warmup=3, repeats=repeats, device=device)
    return 2 * n**3 / statistics.median(times) / 1e9

"""Shared by the benchmark scripts: the same-run compute limit every ratio is taken against."""

from __future__ import annotations

import statistics
import time

import torch


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Median speed of a dense fp32 `n×n` matmul in this process (GFLOP/s), after 3 warm-up products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9

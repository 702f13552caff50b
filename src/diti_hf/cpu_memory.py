"""Keeping freed CPU memory for reuse, so that PyTorch's large CPU tensors stop costing page faults; how much memory a
device has free, and refusing a size estimate that does not fit it before anything is allocated."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# glibc's mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# the largest trim threshold mallopt's int accepts: free memory at the heap's top is returned only beyond 2 GiB
_MAX_TRIM_THRESHOLD = 2**31 - 1


def reuse_freed_memory() -> bool:
    r"""
    Makes glibc's `malloc` keep the memory PyTorch frees on CPU and hand it out again, instead of returning it to the
    operating system and taking it back page by page.

    By default glibc serves every allocation of ≥ 32 MiB (and smaller ones until its adaptive threshold has grown)
    with a fresh `mmap`, and gives freed memory back at once; each new activation tensor then costs one page fault per
    4 KiB. On the CPU benchmark configuration that is about 100,000 page faults per denoiser evaluation; with this
    setting there are none once the heap has grown to the peak (a few evaluations), and a batch-8 evaluation ran
    1.07–1.32× faster, a batch-2 one 1.24× (`benchmarks/results/speed.md`, "Second pass: the non-convolution work and the
    allocator"). The cost is that the process keeps its peak memory mapped until it exits (peak RSS itself barely
    changes).

    It changes process-wide allocator settings, so the library never calls it on import; `diti-hf`, the training
    scripts on CPU and the benchmarks do. A no-op that returns `False` where the C library is not glibc.

    Returns:
        `bool`: Whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # no mmap-served allocations: all come from the heap, whose freed blocks stay mapped and are reused
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _MAX_TRIM_THRESHOLD))


def available_memory(device: str | torch.device = "cpu") -> int | None:
    r"""
    The bytes that can be allocated on `device` now without swapping: `MemAvailable` of `/proc/meminfo` (else the
    free physical pages) on the CPU, the driver's free memory on a CUDA device; `None` where it cannot be known.

    Args:
        device (`str` or `torch.device`, defaults to `"cpu"`): The device.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(num_bytes: float) -> str:
    """`num_bytes` in binary units, e.g. `"1.5 GiB"`."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value, index = float(num_bytes), 0
    while abs(value) >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.0f} B" if index == 0 else f"{value:.1f} {units[index]}"


def check_fits_in_memory(num_bytes: int, device: str | torch.device, what: str) -> None:
    r"""
    Raises a one-line `ValueError` when an estimate of `num_bytes` exceeds the [`available_memory`] of `device`, so
    that a size read from a config is refused before the allocation that would fail (or swap) is tried. Does nothing
    where the available memory cannot be known.

    Args:
        num_bytes (`int`): The estimate.
        device (`str` or `torch.device`): Where it will be allocated.
        what (`str`): What needs it and how it was estimated, for the message (e.g. `"a UNet of 1.2 G parameters"`).
    """
    available = available_memory(device)
    if available is not None and num_bytes > available:
        raise ValueError(
            f"{what} needs about {format_bytes(num_bytes)}, but {format_bytes(available)} of memory is available on "
            f"{device}."
        )

"""Training diagnostics: the per-t loss histogram (docs/method.md §6), image grids, throughput and peak memory."""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from collections.abc import Iterable, Iterator

import torch

from ..visualization import tensor_grid


class TimestepLossHistogram:
    r"""
    Mean training loss per bucket of time-steps, accumulated over many batches.

    The official implementation plots this histogram; for DiTi the loss peaks for t ∈ [100, 300]. The state is two
    `(num_buckets,)` float64 tensors (sum of losses, count), so that processes can add theirs up
    (`accelerator.reduce(..., "sum")`) and a checkpoint can store them.

    Args:
        num_train_timesteps (`int`, defaults to 1000): `T`.
        num_buckets (`int`, defaults to 20): Equal-width buckets of `[0, T)`.

    Examples:
    ```py
    >>> h = TimestepLossHistogram(1000, num_buckets=4)
    >>> h.update(torch.tensor([0, 10, 999]), torch.tensor([1.0, 3.0, 5.0]))
    >>> h.means()
    tensor([2., nan, nan, 5.], dtype=torch.float64)
    ```
    """

    def __init__(self, num_train_timesteps: int = 1000, num_buckets: int = 20):
        if not 1 <= num_buckets <= num_train_timesteps:
            raise ValueError(f"`num_buckets` must lie in [1, {num_train_timesteps}], got {num_buckets}.")
        self.num_train_timesteps, self.num_buckets = num_train_timesteps, num_buckets
        self.sums = torch.zeros(num_buckets, dtype=torch.float64)
        self.counts = torch.zeros(num_buckets, dtype=torch.float64)

    def bucket_edges(self) -> list[int]:
        """The `num_buckets + 1` bucket boundaries (bucket `b` is `[edges[b], edges[b + 1])`)."""
        return [b * self.num_train_timesteps // self.num_buckets for b in range(self.num_buckets + 1)]

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Adds the per-sample `losses` `(B,)` of samples at integer `timesteps` `(B,)`."""
        timesteps = timesteps.detach().reshape(-1).cpu().long()
        losses = losses.detach().reshape(-1).cpu().double()
        if timesteps.shape != losses.shape:
            raise ValueError(f"`timesteps` {tuple(timesteps.shape)} and `losses` {tuple(losses.shape)} differ.")
        buckets = torch.div(timesteps * self.num_buckets, self.num_train_timesteps, rounding_mode="floor")
        self.sums.index_add_(0, buckets, losses)
        self.counts.index_add_(0, buckets, torch.ones_like(losses))

    def state(self) -> torch.Tensor:
        """`(2, num_buckets)` float64: sums and counts."""
        return torch.stack([self.sums, self.counts])

    def load_state(self, state: torch.Tensor) -> None:
        state = state.detach().cpu().double()
        if state.shape != (2, self.num_buckets):
            raise ValueError(f"histogram state must have shape (2, {self.num_buckets}), got {tuple(state.shape)}.")
        self.sums, self.counts = state[0].clone(), state[1].clone()

    def reset(self) -> None:
        self.sums.zero_()
        self.counts.zero_()

    def means(self) -> torch.Tensor:
        """Mean loss per bucket (`nan` for an empty bucket)."""
        return torch.where(self.counts > 0, self.sums / self.counts.clamp_min(1), torch.nan)

    def figure(self, title: str = "training loss per time-step"):
        """A matplotlib `Figure` (no pyplot, no display needed) of the mean loss per bucket."""
        from matplotlib.figure import Figure

        edges = self.bucket_edges()
        means = self.means().tolist()
        figure = Figure(figsize=(6, 3.2), dpi=100)
        axes = figure.add_subplot(1, 1, 1)
        widths = [hi - lo for lo, hi in zip(edges[:-1], edges[1:])]
        axes.bar(edges[:-1], [0.0 if m != m else m for m in means], width=widths, align="edge", edgecolor="black")
        axes.set_xlim(0, self.num_train_timesteps)
        axes.set_xlabel("time-step t")
        axes.set_ylabel("mean weighted loss")
        axes.set_title(f"{title} ({int(self.counts.sum())} samples)")
        figure.tight_layout()
        return figure


# The validation grids logged to tensorboard share the PNG grids' layout.
image_grid = tensor_grid


def peak_memory_mb(device: torch.device | str) -> tuple[float, str]:
    r"""
    Peak memory of this process so far, in MiB, and what was measured: CUDA's peak allocated tensor memory on a
    CUDA device, otherwise the process's peak resident set size (everything the process held, not only tensors).
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "peak_rss"


def parameter_fingerprint(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """`(2 · P,)` float64: the sum and sum of squares of each tensor; equal across processes iff weights agree."""
    values = []
    for p in parameters:
        p = p.detach().double()
        values += [p.sum(), p.square().sum()]
    return torch.stack(values)


class ThroughputMeter:
    r"""
    Counts images and the wall-clock seconds spent training (pausable around validation and checkpointing).

    Examples:
    ```py
    >>> meter = ThroughputMeter()
    >>> meter.add(128)
    >>> with meter.paused():
    ...     pass  # validation time is not counted
    >>> meter.images_per_second() > 0
    True
    ```
    """

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self._window_images, self._window_seconds = 0, 0.0
        self._start = time.perf_counter()

    def add(self, images: int) -> None:
        now = time.perf_counter()
        elapsed = now - self._start
        self._start = now
        self.images += images
        self.seconds += elapsed
        self._window_images += images
        self._window_seconds += elapsed

    def paused(self):
        meter = self

        class _Pause:
            def __enter__(self):
                return meter

            def __exit__(self, *exc):
                meter._start = time.perf_counter()

        return _Pause()

    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def window_images_per_second(self) -> float:
        """Images per second since the last call (for periodic logging)."""
        rate = self._window_images / self._window_seconds if self._window_seconds > 0 else 0.0
        self._window_images, self._window_seconds = 0, 0.0
        return rate


@contextlib.contextmanager
def startup_step(logger: logging.Logger, message: str) -> Iterator[None]:
    r"""
    Logs `"<message>…"` before a slow start-up step and `"<message>: done in <s> s"` after it, so that the minutes
    before the start-up line (data generation, the loss profile) show what is happening.

    Args:
        logger (`logging.Logger`): The script's logger (quiet on the processes that are not the local main one).
        message (`str`): What the step does, e.g. `"generating the diti-shapes dataset (10,000 images)"`.
    """
    logger.info("%s…", message)
    started = time.monotonic()
    yield
    logger.info("%s: done in %.1f s", message, time.monotonic() - started)

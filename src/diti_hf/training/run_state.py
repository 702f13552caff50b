"""The per-process state of a training launch that its checkpoints hold beyond `accelerator.save_state`
([`RunState`]): the optimizer step, the data position, the generator of t and noise, the logging windows and the
count of skipped non-finite batches."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had a NaN/inf loss; reported as one line with exit code 3."""


def process_seed(seed: int, process_index: int) -> int:
    """A seed for process `process_index`'s own random stream (t, noise), distinct per process, stable per seed."""
    import numpy as np

    return int(np.random.SeedSequence([seed, process_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class RunState:
    r"""
    The per-process state a checkpoint must hold beyond what `accelerator.save_state` saves: the optimizer step,
    the data position, the generator of t and noise, and the partial logging windows — so that a resumed run
    continues bit-for-bit where the interrupted one stopped.

    Args:
        seed (`int`): The run's seed.
        process_index (`int`): This process.
        num_train_timesteps (`int`): `T`, for the per-t loss histogram.
    """

    def __init__(self, seed: int, process_index: int, num_train_timesteps: int):
        from ..data.loading import DataPosition
        from .logging_utils import TimestepLossHistogram

        self.global_step = 0
        self.position = DataPosition()
        self.generator = torch.Generator().manual_seed(process_seed(seed, process_index))
        self.histogram = TimestepLossHistogram(num_train_timesteps)
        self.loss_sum, self.loss_count = 0.0, 0
        self.nonfinite_total, self.nonfinite_in_a_row = 0, 0

    def loss_is_finite(self, accelerator, loss: torch.Tensor, max_in_a_row: int) -> bool:
        """
        Whether every process's `loss` is finite (all processes agree, so they skip the same batches). A skipped
        batch is counted; `max_in_a_row` skips in a row raise [`NonFiniteLossError`].
        """
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0, device=loss.device)
        if accelerator.num_processes > 1:
            bad = accelerator.reduce(bad, reduction="sum")
        if float(bad) == 0:
            self.nonfinite_in_a_row = 0
            return True
        self.nonfinite_total += 1
        self.nonfinite_in_a_row += 1
        logging.getLogger(__name__).warning(
            "non-finite loss at step %d: batch skipped (%d in a row, %d in total)",
            self.global_step, self.nonfinite_in_a_row, self.nonfinite_total,
        )  # fmt: skip
        if self.nonfinite_in_a_row >= max_in_a_row:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} batches in a row had a NaN/inf loss (step {self.global_step}); "
                "lower --learning_rate, check the data, or resume from an earlier checkpoint."
            )
        return False

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss_sum += float(loss.detach())
        self.loss_count += 1

    def pop_mean_loss(self) -> float:
        """The mean loss since the last call (this process's)."""
        mean = self.loss_sum / max(1, self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "data_position": dataclasses.asdict(self.position),
            "generator": self.generator.get_state(),
            "histogram": self.histogram.state(),
            "loss_window": (self.loss_sum, self.loss_count),
            "nonfinite": (self.nonfinite_total, self.nonfinite_in_a_row),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from ..data.loading import DataPosition

        self.global_step = int(state["global_step"])
        self.position = DataPosition(**state["data_position"])
        self.generator.set_state(state["generator"])
        self.histogram.load_state(state["histogram"])
        self.loss_sum, self.loss_count = state["loss_window"]
        self.nonfinite_total, self.nonfinite_in_a_row = state.get("nonfinite", (0, 0))

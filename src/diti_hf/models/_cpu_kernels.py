"""CPU versions of two of the decoder's cheap ops that PyTorch runs slowly on CPU: dropout and ×2 nearest upsampling.

Each gives the reference op's values (dropout: the same distribution, see `dropout`) and falls back to it off the
CPU or for inputs it does not cover. `use_reference_ops(True)` switches both back to `F.dropout` / the upsampler
module everywhere, for A/B timing and for debugging. Measured in `benchmarks/results/speed.md`, "Third pass:
dropout masks and the decoder's upsampling" (2.3–2.5 % of a 64×64 training step together).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.upsampling import Upsample2D
from torch import nn

_REFERENCE = {"on": False}


def use_reference_ops(enabled: bool = True) -> None:
    """Run `F.dropout` and the upsampler modules instead of the CPU kernels of this module (process-wide)."""
    _REFERENCE["on"] = bool(enabled)


# CPU dropout masks from 16 random bits per element, four elements per 64-bit draw
_DROPOUT_LEVELS = 2**16


def dropout(hidden: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    r"""
    `F.dropout(hidden, p, training)`, on CPU with a mask drawn from 16-bit random integers: `bernoulli_` draws one
    double-precision uniform per element, single-threaded, and costs several times more. The keep probability is
    `1 - p` rounded to a multiple of 2^-16 (0.1 → 0.899994) and the kept values are scaled by its exact inverse, so
    that the expectation stays `hidden`. Other devices use `F.dropout`.
    """
    if not training or p == 0.0:
        return hidden
    if _REFERENCE["on"]:
        return F.dropout(hidden, p, training)
    keep_levels = round((1.0 - p) * _DROPOUT_LEVELS)
    if hidden.device.type != "cpu" or not 0 < keep_levels < _DROPOUT_LEVELS:
        return F.dropout(hidden, p, training)
    words = torch.empty((hidden.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    bits = words.view(torch.int16)[: hidden.numel()].view(hidden.shape)  # uniform in [-2^15, 2^15)
    keep = bits < keep_levels - _DROPOUT_LEVELS // 2
    return hidden * keep.to(hidden.dtype).mul_(_DROPOUT_LEVELS / keep_levels)


class _NearestUpsample2x(torch.autograd.Function):
    """×2 nearest upsampling of an NCHW tensor as one broadcast copy; backward is PyTorch's own."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor) -> torch.Tensor:
        ctx.input_size = hidden.shape
        n, c, h, w = hidden.shape
        return hidden[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.input_size
        return torch.ops.aten.upsample_nearest2d_backward(grad, [2 * h, 2 * w], [n, c, h, w], 2.0, 2.0)


def upsample(upsampler: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    r"""
    `upsampler(hidden)`; a plain diffusers `Upsample2D` (×2 nearest, no conv) on a contiguous NCHW CPU tensor runs as a
    broadcast copy instead, with the same values: PyTorch's NCHW nearest-upsampling kernel is slow on CPU (≈ 60 ms per
    decoder training step at batch 16), and the broadcast's own autograd backward (a strided sum) slower still.
    """
    plain = isinstance(upsampler, Upsample2D) and upsampler.interpolate and upsampler.norm is None
    plain = plain and not upsampler.use_conv and not upsampler.use_conv_transpose
    if _REFERENCE["on"] or not plain or hidden.device.type != "cpu" or hidden.ndim != 4 or not hidden.is_contiguous():
        return upsampler(hidden)
    return _NearestUpsample2x.apply(hidden)

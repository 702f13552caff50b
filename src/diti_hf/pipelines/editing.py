"""The tensor work of `DiTiPipeline`'s edits: each edit turns its arguments into `z` variants (and, where it needs
them, starting points), which `DiTiPipeline._generate_variants` then generates. The methods keep what needs the
pipeline (encoding, inversion, generation); these functions only check arguments and compute."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .inputs import check_finite, check_same_batch

# Where `DiTiPipeline.swap` starts generating from (see its docstring).
SWAP_INVERSIONS = ("ddim", "stochastic")

Dims = tuple[int, int]


def as_ranges(value: Any) -> list[Any]:
    """`value` as a list of ranges: none, one `(lo, hi)`, or a list of them (each checked when it is resolved)."""
    if value is None:
        return []
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], (tuple, list)):
        return list(value)
    return [value]


def check_swap_arguments(inversion: str, latents: torch.Tensor | None, timesteps: Any, chunks: Any) -> None:
    if inversion not in SWAP_INVERSIONS:
        raise ValueError(f"`inversion` must be one of {SWAP_INVERSIONS}, got {inversion!r}.")
    if latents is not None and inversion != "ddim":
        raise ValueError(f"`latents` replaces the inversion: pass it with `inversion='ddim'`, not {inversion!r}.")
    if timesteps is None and chunks is None:
        raise ValueError("Pass `timesteps=(lo, hi)` (or a list of ranges) or `chunks=(i, j)`.")


def check_latents_per_source(latents: Any, num_sources: int) -> None:
    if latents is not None and (not isinstance(latents, torch.Tensor) or latents.shape[:1] != (num_sources,)):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"`latents` must be a tensor of one x_T per source ({num_sources}), got {got}.")


def per_pair(x: torch.Tensor, num_targets: int | None) -> torch.Tensor:
    """A source's tensor once for each of its pairs: `num_targets` times in a row for all pairs, else itself."""
    return x if num_targets is None else x.repeat_interleave(num_targets, 0)


def swap_variants(
    z_source: torch.Tensor, z_target: torch.Tensor, dims: Sequence[Dims], num_targets: int | None
) -> list[torch.Tensor]:
    r"""
    One `z` per range of `dims`: the source's with the range's dims taken from the target.

    Args:
        z_source, z_target (`torch.Tensor`): `(S, d)` and `(T, d)`.
        dims (`list[tuple[int, int]]`): Half-open dim ranges, one per variant.
        num_targets (`int`, *optional*): `T` to pair every source with every target (pair `p = s * T + t`); `None`
            pairs source `b` with target `b`.
    """
    if num_targets is not None:
        num_sources = z_source.shape[0]
        z_source, z_target = z_source.repeat_interleave(num_targets, 0), z_target.repeat(num_sources, 1)
    else:
        check_same_batch(z_source, z_target, "source", "target")
    variants = []
    for start, end in dims:
        z = z_source.clone()
        z[:, start:end] = z_target[:, start:end]
        variants.append(z)
    return variants


def check_alphas(alphas: Sequence[float]) -> list[float]:
    alphas = [float(a) for a in alphas]
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise ValueError(f"`alphas` must be a non-empty list of finite numbers, got {alphas}.")
    return alphas


def interpolation_variants(
    z_a: torch.Tensor, z_b: torch.Tensor, dims: Dims, alphas: Sequence[float]
) -> list[torch.Tensor]:
    """One `z` per α: A's, with the dims `dims` at `lerp(z_A, z_B, α)`."""
    check_same_batch(z_a, z_b, "image_a", "image_b")
    start, end = dims
    variants = []
    for alpha in alphas:
        z = z_a.clone()
        z[:, start:end] = torch.lerp(z_a[:, start:end], z_b[:, start:end], alpha)
        variants.append(z)
    return variants


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation per sample (the official figures' x_T interpolation)."""
    a_flat, b_flat = a.flatten(1), b.flatten(1)
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    theta = torch.acos(cos.clamp(-1.0, 1.0))[:, None]
    sin = torch.sin(theta)
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - alpha) * theta) / sin.clamp_min(1e-12), torch.full_like(theta, 1 - alpha))
    wb = torch.where(safe, torch.sin(alpha * theta) / sin.clamp_min(1e-12), torch.full_like(theta, alpha))
    return (wa * a_flat + wb * b_flat).view_as(a)


def edit_step(direction: Any, latent_dim: int, top_k: int | None, z_std: Any, device: torch.device) -> torch.Tensor:
    r"""
    The unit edit `√d·σ ⊙ w/‖w‖` of [`~DiTiPipeline.edit`], float32 on `device`.

    Args:
        direction (`torch.Tensor`): `w`, `(latent_dim,)`.
        latent_dim (`int`): `d`.
        top_k (`int`, *optional*): Keep only the `top_k` largest-|w| dims of `w`.
        z_std (`torch.Tensor` or list, *optional*): `σ`, `(latent_dim,)`; ones when `None`.
        device (`torch.device`): Where the step is computed.
    """
    d = latent_dim
    if not isinstance(direction, torch.Tensor) or direction.shape != (d,):
        raise ValueError(
            f"`direction` must be a tensor of shape ({d},), got {getattr(direction, 'shape', direction)}."
        )
    w = direction.to(device=device, dtype=torch.float32)
    if top_k is not None:
        if not 1 <= top_k <= d:
            raise ValueError(f"`top_k` must be in [1, {d}] (at most the model's latent_dim {d}), got {top_k}.")
        keep = torch.zeros_like(w, dtype=torch.bool)
        keep[w.abs().topk(top_k).indices] = True
        w = torch.where(keep, w, torch.zeros_like(w))
    if not torch.isfinite(w).all() or w.norm() == 0:
        raise ValueError("`direction` must be finite and non-zero.")
    std = torch.ones(d) if z_std is None else torch.as_tensor(z_std, dtype=torch.float32)
    if std.shape != (d,):
        raise ValueError(f"`z_std` must have shape ({d},), got {tuple(std.shape)}.")
    check_finite(std, "z_std")
    return math.sqrt(d) * std.to(w.device) * w / w.norm()


def check_scales(scales: float | Sequence[float]) -> list[float]:
    scales = [float(scales)] if isinstance(scales, (int, float)) else [float(s) for s in scales]
    if not all(math.isfinite(s) for s in scales):
        raise ValueError(f"`scales` must be finite numbers, got {scales}.")
    return scales


__all__ = [
    "SWAP_INVERSIONS",
    "as_ranges",
    "check_alphas",
    "check_latents_per_source",
    "check_scales",
    "check_swap_arguments",
    "edit_step",
    "interpolation_variants",
    "per_pair",
    "slerp",
    "swap_variants",
]

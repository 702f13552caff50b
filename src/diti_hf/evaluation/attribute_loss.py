"""Attribute-loss time measured with the frozen DDPM: the time-step at which a factor can no longer be recovered
from the DDPM's one-step estimate of `x_0` (the paper's motivation: fine attributes are lost at small t, coarse ones
at large t)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# eps_fn(x_t (B, C, H, W), t (B,) int64) -> predicted noise (B, C, H, W)
EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def attribute_loss_curve(
    eps_fn: EpsFn,
    oracle: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int] = tuple(range(0, 1000, 100)),
    level: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    r"""
    For each time-step `t`: noise the images, `x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`, take the DDPM's estimate
    `x̂_0 = clamp((x_t − √(1-ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, −1, 1)` and let the oracle read every factor of `x̂_0`.
    A factor is *lost* at the first `t` where its accuracy gain over chance falls to `level` × its gain on the clean
    images.

    Args:
        eps_fn (`Callable`): The frozen DDPM, `(x_t, t) → ε̂`.
        oracle: A factor classifier with `predict(images in [-1, 1]) -> (N, F)`.
        images (`torch.Tensor`): `(N, C, H, W)` in [-1, 1].
        labels (`torch.Tensor`): `(N, F)` factor classes.
        alphas_cumprod (`torch.Tensor`): `(T,)` ᾱ of the DDPM's schedule.
        timesteps (`Sequence[int]`, defaults to 0, 100, …, 900): Increasing time-steps to probe.
        level (`float`, defaults to 0.5): Fraction of the clean gain below which a factor counts as lost.
        batch_size (`int`, defaults to 64): Images per DDPM call.
        seed (`int`, defaults to 0): Seed of the noise (the same ε for every `t`).

    Returns:
        `dict`: `timesteps`, `accuracy` `(F, len(timesteps))`, `clean_accuracy` `(F,)`, `chance` `(F,)` and
        `loss_time` — per factor the first lost time-step, or `None` if it survives every probed `t`.
    """
    images, labels = torch.as_tensor(images).float(), torch.as_tensor(labels).long()
    if images.ndim != 4 or labels.ndim != 2 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"`images` (N, C, H, W) and `labels` (N, F) must match and be non-empty, got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}."
        )
    timesteps = [int(t) for t in timesteps]
    alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if not timesteps or any(b <= a for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"`timesteps` must be non-empty and strictly increasing, got {timesteps}.")
    if timesteps[0] < 0 or timesteps[-1] >= len(alphas_cumprod):
        raise ValueError(f"`timesteps` must lie in [0, {len(alphas_cumprod)}), got {timesteps}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    chance = torch.stack([torch.bincount(col).max() / len(col) for col in labels.T]).double()
    clean = (oracle.predict(images) == labels).double().mean(0)
    accuracy = []
    for t in timesteps:
        a = alphas_cumprod[t].float()
        preds = []
        for i in range(0, len(images), batch_size):
            x0, eps = images[i : i + batch_size], noise[i : i + batch_size]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
            eps_hat = torch.as_tensor(eps_fn(x_t, torch.full((len(x0),), t, dtype=torch.long))).float().cpu()
            x0_hat = ((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()).clamp(-1, 1)
            preds.append(oracle.predict(x0_hat))
        accuracy.append((torch.cat(preds) == labels).double().mean(0))
    accuracy = torch.stack(accuracy, 1)  # (F, len(timesteps))
    loss_time: list[int | None] = []
    for f in range(labels.shape[1]):
        threshold = chance[f] + level * (clean[f] - chance[f])
        lost = torch.nonzero(accuracy[f] <= threshold)
        loss_time.append(timesteps[int(lost[0])] if len(lost) else None)
    return {
        "timesteps": timesteps,
        "accuracy": accuracy,
        "clean_accuracy": clean,
        "chance": chance,
        "loss_time": loss_time,
        "level": level,
    }

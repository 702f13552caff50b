"""Where a frozen DDPM's error lies along the time axis: the loss profile and its figure.

DiTi trains the chunks tied to time-step `t` to correct what the frozen DDPM gets wrong at `t`. The profile measures
that per `t` on real images — the DiTi-weighted ε error (the loss the decoder starts from) and the posterior-mean
error `E‖x₀ − x̂₀(x_t)‖²` with its rate of increase (how much of `x₀` is newly lost at `t`) — so that a partition can
put its dims where there is something to learn ([`~diti_hf.partition.partition_from_profile`]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..partition import TimestepPartition
from ..sampling import DiffusionCoefficients

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_profile_timesteps(num_train_timesteps: int = 1000, num_points: int = 25) -> list[int]:
    """`num_points` evenly spaced time-steps from 0 to `T − 1` (both ends included)."""
    if num_points < 2:
        raise ValueError(f"`num_points` must be >= 2, got {num_points}.")
    points = np.linspace(0, num_train_timesteps - 1, min(num_points, num_train_timesteps))
    return sorted({int(round(t)) for t in points})


@torch.no_grad()
def loss_profile(
    eps_fn: EpsFn,
    images: torch.Tensor,
    coefficients: DiffusionCoefficients,
    timesteps: Sequence[int] | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    r"""
    The frozen DDPM's error per time-step on `images`.

    For each `t`: `x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε` (one seeded ε per image, shared by every `t`, so the curves are smooth in
    `t`), `ε̂ = ε_θ(x_t, t)`, `x̂₀ = clamp((x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, −1, 1)`.

    Args:
        eps_fn (`Callable`): The frozen DDPM, `(x_t, t) → ε̂`.
        images (`torch.Tensor`): `(N, C, H, W)` in [-1, 1].
        coefficients ([`~diti_hf.sampling.DiffusionCoefficients`]): Tables of the DDPM's schedule.
        timesteps (`Sequence[int]`, *optional*): Increasing time-steps probed; default 25 from 0 to T − 1.
        batch_size (`int`, defaults to 64): Images per DDPM call.
        seed (`int`, defaults to 0): Seed of ε.

    Returns:
        `dict` with lists over `timesteps`: `eps_error` (mean of `(ε − ε̂)²`), `weighted_eps_error` (× DiTi's loss
        weight at `t`: the loss a decoder with `G ≡ 0` has), `x0_error` (mean of `(x₀ − x̂₀)²`), `x0_loss_rate` (its
        increase per time-step, clipped at 0: what is newly lost at `t`), plus `num_images`, `seed`.
    """
    images = torch.as_tensor(images).float()
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"`images` must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ValueError("`images` contains NaN or inf.")
    T = coefficients.num_train_timesteps
    timesteps = default_profile_timesteps(T) if timesteps is None else [int(t) for t in timesteps]
    if len(timesteps) < 2 or any(b <= a for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"`timesteps` must hold >= 2 strictly increasing time-steps, got {timesteps}.")
    if timesteps[0] < 0 or timesteps[-1] >= T:
        raise ValueError(f"`timesteps` must lie in [0, {T}), got {timesteps}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    eps_error, x0_error = [], []
    for t in timesteps:
        a = coefficients.alphas_cumprod[t].double()
        sq_eps, sq_x0 = 0.0, 0.0
        for i in range(0, len(images), batch_size):
            x0, eps = images[i : i + batch_size], noise[i : i + batch_size]
            x_t = (a.sqrt() * x0 + (1 - a).sqrt() * eps).float()
            eps_hat = torch.as_tensor(eps_fn(x_t, torch.full((len(x0),), t, dtype=torch.long))).float().cpu()
            if not torch.isfinite(eps_hat).all():
                raise ValueError(f"the DDPM's ε prediction at t = {t} contains NaN or inf.")
            x0_hat = ((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()).clamp(-1, 1)
            sq_eps += float((eps - eps_hat).double().square().sum())
            sq_x0 += float((x0 - x0_hat).double().square().sum())
        eps_error.append(sq_eps / images.numel())
        x0_error.append(sq_x0 / images.numel())
    weight = coefficients.loss_weight.double()
    weighted = [float(weight[t]) * e for t, e in zip(timesteps, eps_error)]
    rate = np.gradient(np.asarray(x0_error), np.asarray(timesteps, dtype=float)).clip(min=0.0)
    return {
        "timesteps": timesteps,
        "eps_error": eps_error,
        "weighted_eps_error": weighted,
        "x0_error": x0_error,
        "x0_loss_rate": rate.tolist(),
        "num_images": int(images.shape[0]),
        "seed": int(seed),
    }


def loss_profile_figure(
    profile: Mapping[str, Any],
    partition: TimestepPartition | None = None,
    loss_times: Mapping[str, int | None] | None = None,
    title: str = "frozen DDPM loss profile",
):
    r"""
    A matplotlib `Figure` (no pyplot needed) of the profile: weighted ε error and x₀ loss rate against `t`, the
    partition's chunk edges (thin) and stage ends (thick), and each factor's attribute-loss time when given.
    """
    from matplotlib.figure import Figure

    t = profile["timesteps"]
    figure = Figure(figsize=(7.5, 3.6), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(t, profile["weighted_eps_error"], color="tab:blue", marker=".", label="weighted ε error")
    axes.set_xlabel("time-step t")
    axes.set_ylabel("weighted ε error", color="tab:blue")
    twin = axes.twinx()
    twin.plot(t, profile["x0_loss_rate"], color="tab:orange", marker=".", label="x₀ loss rate")
    twin.set_ylabel("d/dt E‖x₀ − x̂₀‖²", color="tab:orange")
    T = partition.num_train_timesteps if partition is not None else t[-1] + 1
    axes.set_xlim(0, T)
    if partition is not None:
        for i in range(1, partition.num_chunks):
            axes.axvline(partition.chunk_timesteps(i)[0], color="grey", linewidth=0.5, alpha=0.6)
        for end in (partition.stages or [])[:-1]:
            axes.axvline(end, color="black", linewidth=1.6)
        dims = [partition.chunk_dims(i)[1] - partition.chunk_dims(i)[0] for i in range(partition.num_chunks)]
        title += f" — {partition.num_chunks} chunks, dims per chunk {min(dims)}–{max(dims)}"
    by_time: dict[int, list[str]] = {}
    for name, time in (loss_times or {}).items():
        if time is not None:
            by_time.setdefault(int(time), []).append(name)
    for time, names in sorted(by_time.items()):  # one label per time: factors lost together share it
        axes.axvline(time, color="tab:red", linestyle="--", linewidth=0.8)
        label = ", ".join(names)
        axes.text(time, axes.get_ylim()[1], label, rotation=90, va="top", ha="right", fontsize=7, color="tab:red")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def write_loss_profile(
    profile: Mapping[str, Any],
    output_dir: str | Path,
    partition: TimestepPartition | None = None,
    loss_times: Mapping[str, int | None] | None = None,
    name: str = "loss_profile",
) -> list[str]:
    """Writes `name.json` (profile + partition) and `name.png` into `output_dir`; returns the file names."""
    import json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"profile": dict(profile), "partition": None if partition is None else partition.to_dict()}
    if loss_times is not None:
        payload["attribute_loss_time"] = dict(loss_times)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    loss_profile_figure(profile, partition, loss_times).savefig(out / f"{name}.png")
    return [f"{name}.json", f"{name}.png"]
